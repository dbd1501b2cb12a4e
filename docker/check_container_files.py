#!/usr/bin/env python3
"""deploy_container_files: checks what can be checked of the container files without
building them (no base images, no network, and Grafana is not a Debian package here).

- Every Dockerfile under docker/: each COPY/ADD source that is not from another stage exists
  in the build context (the repository root); each `--from=` names an earlier stage.
- docker/compose.yaml parses (python3-yaml); each build names an existing Dockerfile and a
  stage it defines; each bind-mount source exists in the repository or is declared under
  x-user-folders; each named volume is declared; depends_on names services.
- The Prometheus scrape targets and the Grafana datasource URL name compose services.
- A coordinator's HEALTHCHECK speaks what its command serves: with --tls_cert it passes
  --ca_cert, without it none (in the image and in each compose service that runs it).
Prints every problem as 'FILE: problem' and exits 1 if there is any.
Usage: check_container_files.py REPO_ROOT
"""
import functools
import glob
import os
import re
import sys
import urllib.parse

import yaml


# Each Dockerfile is read and parsed once (compose services share them); callers must not
# change what these return.
@functools.lru_cache(maxsize=None)
def dockerfile_instructions(path):
    """(INSTRUCTION, words, line) of each line of one Dockerfile, continuation lines joined."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        words = line.split()
        if words:
            instructions.append((words[0].upper(), words, line))
    return tuple(instructions)


@functools.lru_cache(maxsize=None)
def dockerfile_stages_and_problems(path, root):
    """Returns (stage names, problems) of one Dockerfile; sources are relative to root."""
    stages, problems = [], []
    rel = os.path.relpath(path, root)
    for op, words, _ in dockerfile_instructions(path):
        if op == "FROM":
            lowered = [w.lower() for w in words]
            if "as" in lowered:
                stages.append(words[lowered.index("as") + 1])
        elif op in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            from_stage = [w.split("=", 1)[1] for w in words[1:] if w.startswith("--from=")]
            if from_stage:
                if from_stage[0] not in stages:
                    problems.append(f"{rel}: COPY --from={from_stage[0]} names no earlier stage "
                                    f"(stages so far: {', '.join(stages) or 'none'})")
                continue
            for source in args[:-1]:
                if not glob.glob(os.path.join(root, source)):
                    problems.append(f"{rel}: {op} source '{source}' does not exist in the "
                                    f"build context {root}")
    return stages, problems


@functools.lru_cache(maxsize=None)
def dockerfile_stage_settings(path):
    """{stage: {"cmd": str, "health": str, "env": {NAME: VALUE}}} of one Dockerfile; a stage
    starts with its parent's settings when built FROM an earlier stage."""
    settings, current = {}, None
    for op, words, line in dockerfile_instructions(path):
        if op == "FROM":
            lowered = [w.lower() for w in words]
            parent = settings.get(words[1], {"cmd": "", "health": "", "env": {}})
            current = {"cmd": parent["cmd"], "health": parent["health"], "env": dict(parent["env"])}
            if "as" in lowered:
                settings[words[lowered.index("as") + 1]] = current
        elif current is None:
            continue
        elif op == "CMD":
            current["cmd"] = line
        elif op == "HEALTHCHECK":
            current["health"] = line
        elif op == "ENV" and len(words) >= 2:
            name, _, value = line.split(None, 1)[1].partition("=")
            current["env"][name.strip()] = value.strip().strip('"')
    return settings


def health_speaks_tls(health, env):
    """Whether a HEALTHCHECK running `steadyeval-server health` passes --ca_cert, with the
    variables it names expanded from env; None when it runs no such probe."""
    if "health" not in health or "steadyeval-server" not in health:
        return None
    expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), health)
    return "--ca_cert" in expanded


def check_health_tls(where, command, health, env, problems):
    tls = health_speaks_tls(health, env)
    if tls is None:
        return
    serves_tls = "--tls_cert" in command
    if serves_tls and not tls:
        problems.append(f"{where}: the command serves TLS (--tls_cert) but the HEALTHCHECK's "
                        "probe passes no --ca_cert: it would always fail")
    elif tls and not serves_tls:
        problems.append(f"{where}: the HEALTHCHECK's probe speaks TLS (--ca_cert) but the "
                        "command serves plaintext: it would always fail")


def check_compose(root, problems):
    path = os.path.join(root, "docker", "compose.yaml")
    rel = os.path.relpath(path, root)
    try:
        with open(path, encoding="utf-8") as f:
            compose = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{rel}: does not parse: {e}")
        return set()
    base = os.path.dirname(path)
    user_folders = {os.path.normpath(os.path.join(base, p))
                    for p in compose.get("x-user-folders", [])}
    volumes = set((compose.get("volumes") or {}).keys())
    services = compose.get("services") or {}
    images = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = os.path.normpath(os.path.join(base, build.get("context", ".")))
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                problems.append(f"{rel}: service {name}: dockerfile {dockerfile} does not exist")
            else:
                stages, _ = dockerfile_stages_and_problems(dockerfile, context)
                if build.get("target") and build["target"] not in stages:
                    problems.append(f"{rel}: service {name}: target '{build['target']}' is not a "
                                    f"stage of {dockerfile} ({', '.join(stages)})")
                stage = dockerfile_stage_settings(dockerfile).get(build.get("target"))
                if stage:
                    env = dict(stage["env"])
                    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
                    command = " ".join(svc["command"]) if "command" in svc else stage["cmd"]
                    check_health_tls(f"{rel}: service {name}", command, stage["health"], env,
                                     problems)
            image = svc.get("image")
            if image in images and images[image] != build:
                problems.append(f"{rel}: services {images[image][0]} and {name} build different "
                                f"things into the same image name {image}")
            images[image] = (name, build)
        elif not svc.get("image"):
            problems.append(f"{rel}: service {name} has neither build nor image")
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                full = os.path.normpath(os.path.join(base, source))
                if full not in user_folders and not os.path.exists(full):
                    problems.append(f"{rel}: service {name}: bind-mount source {source} does not "
                                    "exist (nor is it under x-user-folders)")
            elif source not in volumes:
                problems.append(f"{rel}: service {name}: volume {source} is not declared under "
                                "volumes:")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                problems.append(f"{rel}: service {name} depends on unknown service {dep}")
    return set(services)


def check_targets(root, services, problems):
    """The hosts Prometheus scrapes and Grafana queries must be compose services."""
    prom = os.path.join(root, "deploy", "prometheus", "prometheus.yml")
    with open(prom, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host = target.rsplit(":", 1)[0]
                if host not in services:
                    problems.append(f"deploy/prometheus/prometheus.yml: job {job['job_name']} "
                                    f"scrapes {target}, but docker/compose.yaml has no service "
                                    f"{host}")
    ds = os.path.join(root, "deploy", "grafana", "provisioning", "datasources", "steadyeval.yml")
    with open(ds, encoding="utf-8") as f:
        for source in yaml.safe_load(f).get("datasources", []):
            host = urllib.parse.urlparse(source.get("url", "")).hostname
            if host not in services:
                problems.append(f"{os.path.relpath(ds, root)}: datasource URL host {host} is not "
                                "a service of docker/compose.yaml")


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems = []
    dockerfiles = sorted(glob.glob(os.path.join(root, "docker", "Dockerfile*")))
    if not dockerfiles:
        problems.append("docker/: no Dockerfile found")
    for path in dockerfiles:
        problems += dockerfile_stages_and_problems(path, root)[1]
        for stage, settings in dockerfile_stage_settings(path).items():
            check_health_tls(f"{os.path.relpath(path, root)}: stage {stage}", settings["cmd"],
                             settings["health"], settings["env"], problems)
    services = check_compose(root, problems)
    if services:
        check_targets(root, services, problems)
    for p in problems:
        print(p)
    print(f"container files: {len(dockerfiles)} Dockerfiles and docker/compose.yaml checked, "
          f"{len(problems)} problems (images are not built here)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
