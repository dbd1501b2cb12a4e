#include "examples/toy_pretrain/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "common/task.h"
#include "nlohmann/json.hpp"

namespace steadyeval::toy {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kSyllables[] = {"ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe",
                                      "zu", "ba", "ri", "go", "la", "ne", "to", "shi", "ma", "fe"};
constexpr const char* kCities[] = {"Lima",  "Oslo",  "Paris", "Cairo", "Tokyo", "Rome",
                                   "Delhi", "Quito", "Seoul", "Dakar", "Kyiv",  "Lagos",
                                   "Hanoi", "Perth", "Bern",  "Riga"};
constexpr const char* kJobs[] = {"baker",   "farmer", "doctor", "teacher", "pilot", "singer",
                                 "nurse",   "painter", "driver", "writer", "cook",  "judge"};
constexpr const char* kPets[] = {"cat",  "dog",    "horse", "rabbit", "parrot",
                                 "goat", "turtle", "snake", "mouse",  "duck"};

enum Attribute { kCity = 0, kJob = 1, kPet = 2 };
constexpr int kAttributes = 3;

template <size_t N>
std::vector<std::string> Words(const char* const (&words)[N]) {
  return std::vector<std::string>(words, words + N);
}
const std::vector<std::string>& Values(int attribute) {
  static const auto* values = new std::vector<std::vector<std::string>>{
      Words(kCities), Words(kJobs), Words(kPets)};
  return (*values)[attribute];
}

// Uniform in [0, n) from the raw 64-bit draw (portable, unlike distribution objects).
size_t Pick(std::mt19937_64& rng, size_t n) { return static_cast<size_t>(rng() % n); }

template <typename T>
void Shuffle(std::vector<T>& items, std::mt19937_64& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[Pick(rng, i)]);
}

struct Person {
  std::string name;
  int values[kAttributes];  // index into Values(attribute)
};

const std::string& ValueOf(const Person& p, int attribute) {
  return Values(attribute)[p.values[attribute]];
}

std::string Statement(const std::string& name, int attribute, const std::string& value,
                      bool alternate) {
  switch (attribute) {
    case kCity:
      return alternate ? absl::StrCat("The home of ", name, " is ", value, ".")
                       : absl::StrCat(name, " lives in ", value, ".");
    case kJob:
      return alternate ? absl::StrCat(name, " is a ", value, ".")
                       : absl::StrCat(name, " works as a ", value, ".");
    default:
      return alternate ? absl::StrCat("The pet of ", name, " is a ", value, ".")
                       : absl::StrCat(name, " has a ", value, ".");
  }
}

std::string Question(const std::string& name, int attribute) {
  switch (attribute) {
    case kCity: return absl::StrCat("Where does ", name, " live?");
    case kJob: return absl::StrCat("What is the job of ", name, "?");
    default: return absl::StrCat("What pet does ", name, " have?");
  }
}

// A generation task's samples: the eval split, and the train pool whose first
// `train_samples` form the train file (the rest only become training documents).
struct GenerationSplits {
  std::string filename, instruction;
  int output_length = 0;
  std::vector<std::string> metrics;
  std::vector<GenerationSample> eval, train_pool;
};

Json SamplesJson(const std::vector<GenerationSample>& samples, size_t count) {
  Json out = Json::array();
  for (size_t i = 0; i < std::min(count, samples.size()); ++i) {
    out.push_back({{"input", samples[i].input}, {"output", samples[i].output}});
  }
  return out;
}

Json TaskJson(const GenerationSplits& s, const std::vector<GenerationSample>& samples,
              size_t count) {
  Json j;
  j["instruction"] = s.instruction;
  j["output_length"] = s.output_length;
  j["metrics"] = s.metrics;
  j["few_shots"] = SamplesJson(s.train_pool, kToyFewShots);
  j["samples"] = SamplesJson(samples, count);
  return j;
}

// Adds the eval and train files of `s` to `corpus` and one document per train-pool
// sample: the evaluator's prompt (shots from the train file) followed by the answer.
absl::Status AddGenerationTask(const GenerationSplits& s, size_t train_samples,
                               ToyCorpus* corpus) {
  const std::string eval = TaskJson(s, s.eval, s.eval.size()).dump(1);
  const std::string train = TaskJson(s, s.train_pool, train_samples).dump(1);
  corpus->eval_tasks.push_back({s.filename, eval});
  corpus->train_tasks.push_back({s.filename, train});
  TaskOptions options;
  options.train_filename = "train/" + s.filename;
  options.train_content = train;
  ASSIGN_OR_RETURN(Task task, ParseTask(s.filename, train, options));
  task.samples = s.train_pool;
  for (size_t i = 0; i < task.samples.size(); ++i) {
    corpus->documents.push_back(BuildPrompt(task, i, ToyPromptOptions()) +
                                task.samples[i].output);
  }
  return absl::OkStatus();
}

// Draws from `make` until `eval_count` distinct eval samples and `pool_count` distinct
// train samples (no input shared with eval) exist, or gives up.
template <typename Make>
absl::Status DrawSplits(const std::string& what, size_t eval_count, size_t pool_count,
                        std::mt19937_64& rng, Make make, GenerationSplits* s) {
  std::set<std::string> seen;
  const size_t limit = 200 * (eval_count + pool_count);
  for (size_t tries = 0; s->eval.size() + s->train_pool.size() < eval_count + pool_count;
       ++tries) {
    if (tries > limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": cannot draw ", eval_count, " eval and ", pool_count,
          " train samples that differ; lower --eval_samples/--train_samples or widen the world"));
    }
    GenerationSample sample = make(rng);
    if (!seen.insert(sample.input).second) continue;
    (s->eval.size() < eval_count ? s->eval : s->train_pool).push_back(std::move(sample));
  }
  return absl::OkStatus();
}

std::vector<Person> MakePeople(int count, std::mt19937_64& rng) {
  std::set<std::string> names;
  std::vector<Person> people;
  const size_t syllables = std::size(kSyllables);
  while (static_cast<int>(people.size()) < count) {
    std::string name = std::string(kSyllables[Pick(rng, syllables)]) +
                       kSyllables[Pick(rng, syllables)];
    if (Pick(rng, 3) == 0) name += kSyllables[Pick(rng, syllables)];
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    if (!names.insert(name).second) continue;
    Person p;
    p.name = name;
    for (int a = 0; a < kAttributes; ++a) p.values[a] = static_cast<int>(Pick(rng, Values(a).size()));
    people.push_back(std::move(p));
  }
  return people;
}

std::string MultipleChoiceLine(const ChoiceExample& e) {
  Json j;
  j["id"] = e.id;
  j["query"] = e.query;
  j["choices"] = e.choices;
  j["gold"] = e.gold;
  return j.dump();
}

// Four choices: the gold one at a random position, three distinct distractors.
ChoiceExample ShuffledChoice(std::string query, std::string gold,
                             std::vector<std::string> distractors, std::mt19937_64& rng) {
  ChoiceExample e;
  e.query = std::move(query);
  e.choices = {" " + gold};
  for (size_t i = 0; i < 3; ++i) e.choices.push_back(" " + distractors[i]);
  Shuffle(e.choices, rng);
  e.gold = static_cast<int>(std::find(e.choices.begin(), e.choices.end(), " " + gold) -
                            e.choices.begin());
  return e;
}

// Distinct values of `attribute` other than `exclude`, shuffled.
std::vector<std::string> OtherValues(int attribute, const std::string& exclude,
                                     std::mt19937_64& rng) {
  std::vector<std::string> out;
  for (const std::string& v : Values(attribute)) {
    if (v != exclude) out.push_back(v);
  }
  Shuffle(out, rng);
  return out;
}

}  // namespace

PromptOptions ToyPromptOptions() {
  PromptOptions options;
  options.few_shots = kToyFewShots;
  options.language = kToyPromptLanguage;
  return options;
}

absl::StatusOr<ToyCorpus> GenerateCorpus(const CorpusOptions& options) {
  if (options.people < 8 || options.people > 4000) {
    return absl::InvalidArgumentError(
        absl::StrCat("people must be in 8..4000, got ", options.people));
  }
  if (options.eval_samples < 1 || options.train_samples < kToyFewShots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "eval_samples must be >= 1 and train_samples >= ", kToyFewShots, " (got ",
        options.eval_samples, ", ", options.train_samples, ")"));
  }
  if (options.max_addend < 9 || options.max_addend > 9999) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_addend must be in 9..9999, got ", options.max_addend));
  }
  std::mt19937_64 rng(options.seed * 0x9E3779B97F4A7C15ULL + 17);
  const std::vector<Person> people = MakePeople(options.people, rng);
  const size_t eval_count = options.eval_samples;
  const size_t train_count = options.train_samples;
  ToyCorpus corpus;

  // Facts QA. Held-out (person, attribute) pairs: asked in eval, never in a training
  // question (QA or MC), only stated.
  std::set<std::pair<size_t, int>> held_out;
  GenerationSplits qa;
  qa.filename = "toy_facts_qa.json";
  qa.instruction = "Answer the question with one word.";
  qa.output_length = 12;
  qa.metrics = {"exact_match", "char_f1"};
  {
    std::vector<std::pair<size_t, int>> pairs;
    for (size_t i = 0; i < people.size(); ++i) {
      for (int a = 0; a < kAttributes; ++a) pairs.emplace_back(i, a);
    }
    Shuffle(pairs, rng);
    const size_t mc_facts = eval_count / 2;
    if (pairs.size() < 2 * eval_count + mc_facts + train_count) {
      return absl::InvalidArgumentError(absl::StrCat(
          "people: ", options.people, " people give ", pairs.size(),
          " facts, too few for the requested samples; raise people"));
    }
    for (size_t k = 0; k < pairs.size(); ++k) {
      const auto [i, a] = pairs[k];
      GenerationSample s{Question(people[i].name, a), ValueOf(people[i], a)};
      if (k < eval_count) {
        held_out.insert(pairs[k]);
        qa.eval.push_back(std::move(s));
      } else if (k < eval_count + mc_facts) {
        held_out.insert(pairs[k]);  // reserved for the MC eval split below
      } else {
        qa.train_pool.push_back(std::move(s));
      }
    }
  }

  // Arithmetic.
  GenerationSplits arith;
  arith.filename = "toy_arith.json";
  arith.instruction = "Add the two numbers and answer with the sum only.";
  arith.output_length = 6;
  arith.metrics = {"exact_match"};
  // Every sum is also stated plainly ("3 + 4 = 7.", below), eval ones included, as the
  // facts are: the model can memorise the table, the eval asks it in the QA form.
  const int addends = options.max_addend + 1;
  const size_t pairs = static_cast<size_t>(addends) * addends;
  if (pairs < eval_count + kToyFewShots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_addend ", options.max_addend, " gives ", pairs, " sums, too few for ", eval_count,
        " eval samples; raise max_addend"));
  }
  RETURN_IF_ERROR(DrawSplits(
      "arithmetic", eval_count, std::min(3 * train_count, pairs - eval_count), rng,
      [&](std::mt19937_64& r) {
        const size_t x = Pick(r, addends), y = Pick(r, addends);
        return GenerationSample{absl::StrCat("What is ", x, " + ", y, "?"),
                                absl::StrCat(x + y)};
      },
      &arith));

  // Entailment over a person's true facts.
  GenerationSplits nli;
  nli.filename = "toy_nli.json";
  nli.instruction =
      "Does the premise entail the hypothesis? Answer entailment, contradiction or neutral.";
  nli.output_length = 16;  // "entailment" after a newline is many pieces
  nli.metrics = {"exact_match"};
  RETURN_IF_ERROR(DrawSplits(
      "entailment", eval_count, 3 * train_count, rng,
      [&](std::mt19937_64& r) {
        const Person& p = people[Pick(r, people.size())];
        const int left_out = static_cast<int>(Pick(r, kAttributes));
        std::vector<int> stated;
        for (int a = 0; a < kAttributes; ++a) {
          if (a != left_out) stated.push_back(a);
        }
        const std::string premise =
            absl::StrCat(Statement(p.name, stated[0], ValueOf(p, stated[0]), false), " ",
                         Statement(p.name, stated[1], ValueOf(p, stated[1]), Pick(r, 2) == 0));
        const size_t label = Pick(r, 3);
        int attribute = stated[Pick(r, 2)];
        std::string value = ValueOf(p, attribute), answer = "entailment";
        if (label == 1) {
          value = OtherValues(attribute, value, r)[0];
          answer = "contradiction";
        } else if (label == 2) {
          attribute = left_out;
          value = Values(attribute)[Pick(r, Values(attribute).size())];
          answer = "neutral";
        }
        return GenerationSample{
            absl::StrCat("Premise: ", premise, "\nHypothesis: ",
                         Statement(p.name, attribute, value, Pick(r, 2) == 0)),
            answer};
      },
      &nli));

  RETURN_IF_ERROR(AddGenerationTask(qa, train_count, &corpus));
  RETURN_IF_ERROR(AddGenerationTask(arith, train_count, &corpus));
  RETURN_IF_ERROR(AddGenerationTask(nli, train_count, &corpus));

  // Multiple choice: a person's fact among four values (held-out facts in eval), or which
  // word belongs to a category.
  {
    const char* const kCategoryNames[] = {"a city", "a job", "an animal"};
    auto fact_choice = [&](size_t i, int a) {
      std::vector<std::string> distractors = OtherValues(a, ValueOf(people[i], a), rng);
      return ShuffledChoice(absl::StrCat("Question: ", Question(people[i].name, a), "\nAnswer:"),
                            ValueOf(people[i], a), std::move(distractors), rng);
    };
    auto category_choice = [&]() {
      const int a = static_cast<int>(Pick(rng, kAttributes));
      std::vector<std::string> distractors;
      for (int other = 0; other < kAttributes; ++other) {
        if (other != a) distractors.push_back(Values(other)[Pick(rng, Values(other).size())]);
      }
      distractors.push_back(people[Pick(rng, people.size())].name);
      Shuffle(distractors, rng);
      const std::string gold = Values(a)[Pick(rng, Values(a).size())];
      return ShuffledChoice(
          absl::StrCat("Question: Which of these is ", kCategoryNames[a], "?\nAnswer:"), gold,
          distractors, rng);
    };
    auto key = [](const ChoiceExample& e) {
      return absl::StrCat(e.query, "|", absl::StrJoin(e.choices, "|"));
    };
    std::vector<ChoiceExample> eval;
    std::set<std::string> eval_keys;
    std::set<std::string> eval_queries;
    size_t facts_in_eval = 0;
    for (const auto& [i, a] : held_out) {
      // Any held-out pair is a fair MC question (its fact is only ever stated).
      if (facts_in_eval == eval_count / 2) break;
      eval.push_back(fact_choice(i, a));
      eval_queries.insert(eval.back().query);
      ++facts_in_eval;
    }
    while (eval.size() < eval_count) {
      ChoiceExample e = category_choice();
      if (eval_keys.insert(key(e)).second) eval.push_back(std::move(e));
    }
    Shuffle(eval, rng);
    std::string lines;
    for (size_t k = 0; k < eval.size(); ++k) {
      eval[k].id = absl::StrCat(k + 1);
      eval_keys.insert(key(eval[k]));
      absl::StrAppend(&lines, MultipleChoiceLine(eval[k]), "\n");
    }
    corpus.eval_tasks.push_back({"toy_facts_mc.jsonl", lines});
    // Training documents: facts not held out, and category questions not in eval.
    size_t added = 0;
    for (size_t tries = 0; added < 3 * train_count && tries < 100 * train_count; ++tries) {
      ChoiceExample e;
      if (Pick(rng, 2) == 0) {
        const size_t i = Pick(rng, people.size());
        const int a = static_cast<int>(Pick(rng, kAttributes));
        if (held_out.count({i, a})) continue;
        e = fact_choice(i, a);
      } else {
        e = category_choice();
      }
      if (eval_keys.count(key(e)) || eval_queries.count(e.query)) continue;
      corpus.documents.push_back(e.query + e.choices[e.gold]);
      ++added;
    }
  }

  // Statements of every fact, several documents per person in varied order and wording.
  for (const Person& p : people) {
    for (int copy = 0; copy < 4; ++copy) {
      std::vector<int> order = {kCity, kJob, kPet};
      Shuffle(order, rng);
      std::vector<std::string> sentences;
      for (int a : order) sentences.push_back(Statement(p.name, a, ValueOf(p, a), Pick(rng, 2) == 0));
      corpus.documents.push_back(absl::StrJoin(sentences, " "));
    }
  }

  // The addition table, twice, a few sums per document.
  for (int copy = 0; copy < 2; ++copy) {
    std::vector<std::string> sums;
    for (int x = 0; x < addends; ++x) {
      for (int y = 0; y < addends; ++y) sums.push_back(absl::StrCat(x, " + ", y, " = ", x + y, "."));
    }
    Shuffle(sums, rng);
    for (size_t i = 0; i < sums.size(); i += 4) {
      const size_t end = std::min(sums.size(), i + 4);
      corpus.documents.push_back(absl::StrJoin(sums.begin() + i, sums.begin() + end, " "));
    }
  }

  Shuffle(corpus.documents, rng);
  for (const std::string& doc : corpus.documents) {
    absl::StrAppend(&corpus.tokenizer_text, absl::StrReplaceAll(doc, {{"\n", " "}}), "\n");
  }
  return corpus;
}

absl::Status WriteTaskFiles(const ToyCorpus& corpus, const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root / "train", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("--tasks_out ", dir, ": cannot create folder: ", ec.message()));
  }
  auto write = [](const fs::path& path, const std::string& content) -> absl::Status {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(path.string(), ": cannot write task file"));
    return absl::OkStatus();
  };
  for (const TaskFile& f : corpus.eval_tasks) RETURN_IF_ERROR(write(root / f.filename, f.content));
  for (const TaskFile& f : corpus.train_tasks) {
    RETURN_IF_ERROR(write(root / "train" / f.filename, f.content));
  }
  return absl::OkStatus();
}

}  // namespace steadyeval::toy
