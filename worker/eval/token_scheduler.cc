#include "worker/eval/token_scheduler.h"

#include <algorithm>
#include <cstring>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {

absl::StatusOr<TokenScheduler> TokenScheduler::Create(const Options& options) {
  if (options.batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_tokens must be at least 1, got ", options.batch_tokens));
  }
  return TokenScheduler(options);
}

std::vector<int32_t> TokenScheduler::Insert(const std::vector<int64_t>& tokens, size_t count) {
  std::vector<int32_t> path;
  path.reserve(count);
  int32_t parent = -1;
  for (size_t i = 0; i < count; ++i) {
    auto [it, inserted] = child_of_.try_emplace({parent, tokens[i]}, 0);
    if (inserted) {
      const auto id = static_cast<int32_t>(nodes_.size());
      it->second = id;
      Node node;
      node.token = tokens[i];
      node.parent = parent;
      node.depth = static_cast<int32_t>(i);
      nodes_.push_back(node);
      // Children in insertion order: requests are run roughly in the order they came.
      int32_t& first = parent < 0 ? first_root_ : nodes_[parent].first_child;
      int32_t& last = parent < 0 ? last_root_ : nodes_[parent].last_child;
      if (first < 0) {
        first = id;
      } else {
        nodes_[last].next_sibling = id;
      }
      last = id;
    }
    parent = it->second;
    path.push_back(parent);
  }
  return path;
}

absl::StatusOr<size_t> TokenScheduler::AddLoglik(const std::vector<int64_t>& tokens,
                                                 size_t score_from, size_t group) {
  if (score_from < 1 || score_from >= tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log-likelihood request of ", tokens.size(), " tokens scoring from token ", score_from,
        ": needs 1 <= score_from < tokens"));
  }
  const size_t request = request_last_.size();
  // The last token is only a target: nothing reads its output.
  const std::vector<int32_t> path = Insert(tokens, tokens.size() - 1);
  for (size_t k = score_from; k < tokens.size(); ++k) {
    targets_[path[k - 1]].push_back({static_cast<int32_t>(request), tokens[k]});
  }
  request_last_.push_back(path.back());
  request_group_.push_back(group);
  logliks_.push_back(0);
  ++stats_.requests;
  stats_.requested_tokens += tokens.size() - 1;
  return request;
}

absl::StatusOr<size_t> TokenScheduler::AddPrompt(const std::vector<int64_t>& tokens,
                                                 size_t group) {
  if (tokens.empty()) return absl::InvalidArgumentError("empty generation prompt");
  const size_t request = request_last_.size();
  const std::vector<int32_t> path = Insert(tokens, tokens.size());
  prompts_[path.back()].push_back(static_cast<int32_t>(request));
  request_last_.push_back(path.back());
  request_group_.push_back(group);
  logliks_.push_back(0);
  ++stats_.requests;
  stats_.requested_tokens += tokens.size();
  return request;
}

absl::Status TokenScheduler::Run(const LanguageModel& model, const PromptFn& on_prompt,
                                 int64_t spare_slots) {
  if (ran_) return absl::FailedPreconditionError("TokenScheduler::Run called twice");
  ran_ = true;
  // Preorder of the trie.
  std::vector<int32_t> order;
  order.reserve(nodes_.size());
  std::vector<int32_t> pos(nodes_.size());
  int32_t max_depth = 0;
  {
    std::vector<int32_t> pending;
    for (int32_t c = first_root_; c >= 0; c = nodes_[c].next_sibling) pending.push_back(c);
    std::reverse(pending.begin(), pending.end());
    while (!pending.empty()) {
      const int32_t n = pending.back();
      pending.pop_back();
      pos[n] = static_cast<int32_t>(order.size());
      order.push_back(n);
      max_depth = std::max(max_depth, nodes_[n].depth);
      const size_t mark = pending.size();
      for (int32_t c = nodes_[n].first_child; c >= 0; c = nodes_[c].next_sibling) {
        pending.push_back(c);
      }
      std::reverse(pending.begin() + static_cast<std::ptrdiff_t>(mark), pending.end());
    }
  }
  const int64_t limit = model.length_dependent_beyond();
  if (limit > 0 && max_depth + 2 > limit) {
    // +2: a log-likelihood request's unrun last token still counts in its length.
    return absl::InvalidArgumentError(absl::StrCat(
        "a request of ", max_depth + 2, " tokens is longer than ", limit,
        ", where this model's positions depend on the sequence length; evaluate it alone"));
  }
  if (!prompts_.empty() && !on_prompt) {
    return absl::InvalidArgumentError("generation prompts need a prompt callback");
  }
  // Progress: a group is done once the batch holding the deepest node of each of its
  // requests has run.
  absl::flat_hash_map<size_t, int32_t> group_end;
  for (size_t r = 0; r < request_last_.size(); ++r) {
    int32_t& end = group_end[request_group_[r]];
    end = std::max(end, pos[request_last_[r]] + 1);
  }
  std::vector<int32_t> group_ends;
  for (const auto& [group, end] : group_end) group_ends.push_back(end);
  std::sort(group_ends.begin(), group_ends.end());

  const auto total = static_cast<int64_t>(order.size());
  stats_.computed_tokens = static_cast<uint64_t>(total);
  KVCache stack;                     // KV of the path above the next batch's first node
  std::vector<int32_t> stack_nodes;  // stack slot d holds the ancestor at depth d
  size_t groups_done = 0;
  for (int64_t a = 0; a < total; a += options_.batch_tokens) {
    const int64_t b = std::min(total, a + options_.batch_tokens);
    const int64_t n = b - a;
    const int64_t past = static_cast<int64_t>(stack_nodes.size());
    const int64_t width = past + n;
    // Inputs on the CPU: ids, positions, the visibility of every slot, the rows read.
    std::vector<int64_t> ids(n), positions(n), outputs;
    std::vector<uint8_t> visible(static_cast<size_t>(n * width), 0);
    for (int64_t k = 0; k < n; ++k) {
      const Node& node = nodes_[order[a + k]];
      ids[k] = node.token;
      positions[k] = node.depth;
      uint8_t* row = &visible[static_cast<size_t>(k * width)];
      if (node.parent >= 0 && pos[node.parent] >= a) {
        // The parent is in this batch: see what it sees.
        std::memcpy(row, &visible[static_cast<size_t>((pos[node.parent] - a) * width)],
                    static_cast<size_t>(width));
      } else {
        // The parent (if any) is the stack's slot depth - 1: see slots 0..depth-1.
        std::memset(row, 1, static_cast<size_t>(node.depth));
      }
      row[past + k] = 1;
      const int32_t id = order[a + k];
      if (targets_.contains(id) || prompts_.contains(id)) outputs.push_back(k);
    }
    ASSIGN_OR_RETURN(
        PackedBatch batch, GuardTorch("token scheduler", [&]() -> absl::StatusOr<PackedBatch> {
          PackedBatch p;
          p.ids = at::tensor(ids, at::kLong);
          p.positions = at::tensor(positions, at::kLong);
          p.visible = at::from_blob(visible.data(), {n, width}, at::kByte).to(at::kBool);
          p.outputs = at::tensor(outputs, at::kLong);
          return p;
        }));
    auto logits = model.ForwardPacked(batch, &stack);
    if (!logits.ok()) {
      return Annotate(logits.status(), absl::StrCat("token batch ", stats_.batches + 1, " (",
                                                    n, " tokens after ", past, " cached)"));
    }
    ++stats_.batches;
    stats_.scored_positions += outputs.size();
    // Log-likelihoods: one log-sum-exp per scored row, in double, as log_softmax would.
    std::vector<int64_t> target_index;  // flattened [M, V] index of each target
    std::vector<int64_t> target_row;
    std::vector<int32_t> target_request;
    const int64_t vocab = logits->size(1);
    for (size_t m = 0; m < outputs.size(); ++m) {
      auto it = targets_.find(order[a + outputs[m]]);
      if (it == targets_.end()) continue;
      for (const Target& t : it->second) {
        target_index.push_back(static_cast<int64_t>(m) * vocab + t.token);
        target_row.push_back(static_cast<int64_t>(m));
        target_request.push_back(t.request);
      }
    }
    if (!target_index.empty()) {
      ASSIGN_OR_RETURN(
          std::vector<double> logprobs,
          GuardTorch("token scheduler", [&]() -> absl::StatusOr<std::vector<double>> {
            c10::InferenceMode inference;
            const at::Tensor rows = logits->to(at::kDouble);
            const at::Tensor lse = at::logsumexp(rows, 1);
            const at::Tensor picked =
                (rows.view({-1}).index_select(0, at::tensor(target_index, at::kLong)) -
                 lse.index_select(0, at::tensor(target_row, at::kLong)))
                    .contiguous();
            return std::vector<double>(picked.data_ptr<double>(),
                                       picked.data_ptr<double>() + picked.numel());
          }));
      for (size_t i = 0; i < logprobs.size(); ++i) logliks_[target_request[i]] += logprobs[i];
    }
    // Prompts that end in this batch: their logits and the KV of their whole path.
    for (size_t m = 0; m < outputs.size(); ++m) {
      auto it = prompts_.find(order[a + outputs[m]]);
      if (it == prompts_.end()) continue;
      std::vector<int64_t> slots;
      const uint8_t* row = &visible[static_cast<size_t>(outputs[m] * width)];
      for (int64_t s = 0; s < width; ++s) {
        if (row[s] != 0) slots.push_back(s);
      }
      for (int32_t request : it->second) {
        ASSIGN_OR_RETURN(KVCache cache, stack.SelectSlots(slots, spare_slots));
        ASSIGN_OR_RETURN(at::Tensor last,
                         GuardTorch("token scheduler", [&]() -> absl::StatusOr<at::Tensor> {
                           return (*logits)[static_cast<int64_t>(m)].clone();
                         }));
        RETURN_IF_ERROR(on_prompt(static_cast<size_t>(request), std::move(last), std::move(cache)));
      }
    }
    // Keep the path above the next batch's first node: stack slots of its ancestors that
    // precede this batch, then those inside it.
    std::vector<int32_t> next_nodes;
    std::vector<int64_t> next_slots;
    if (b < total) {
      std::vector<int32_t> inside;  // ancestors inside this batch, deepest first
      int32_t p = nodes_[order[b]].parent;
      while (p >= 0 && pos[p] >= a) {
        inside.push_back(p);
        p = nodes_[p].parent;
      }
      const int32_t kept = p < 0 ? 0 : nodes_[p].depth + 1;  // stack slots 0..kept-1
      for (int32_t d = 0; d < kept; ++d) {
        next_nodes.push_back(stack_nodes[d]);
        next_slots.push_back(d);
      }
      for (auto it = inside.rbegin(); it != inside.rend(); ++it) {
        next_nodes.push_back(*it);
        next_slots.push_back(past + (pos[*it] - a));
      }
    }
    bool is_prefix = true;  // the kept slots are 0..k-1: truncate in place
    for (size_t i = 0; i < next_slots.size(); ++i) is_prefix &= next_slots[i] == static_cast<int64_t>(i);
    if (next_slots.empty()) {
      stack.Clear();
    } else if (is_prefix) {
      stack.set_length(static_cast<int64_t>(next_slots.size()));
    } else {
      ASSIGN_OR_RETURN(stack, stack.SelectSlots(next_slots, options_.batch_tokens));
    }
    stack_nodes = std::move(next_nodes);
    while (groups_done < group_ends.size() && group_ends[groups_done] <= b) ++groups_done;
    if (options_.after_batch && !options_.after_batch(groups_done)) {
      return absl::CancelledError(absl::StrCat("evaluation cancelled after token batch ",
                                               stats_.batches));
    }
  }
  return absl::OkStatus();
}

}  // namespace steadyeval
