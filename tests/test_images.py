"""The operator and trainer Dockerfiles, checked without a Docker engine (images are built
elsewhere): hadolint finds nothing, and what the images promise is read off the files:
pinned bases and packages, a non-root user, the entrypoints, no secrets, and COPY
sources that exist in each build context and survive its .dockerignore."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.tools import executable

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    context: Path  # the build context the Dockerfile's header comment names
    entrypoint: list[str]


OPERATOR = Image("operator", ROOT / "Dockerfile", ROOT, ["kubenas", "operator"])
TRAINER = Image("trainer", ROOT / "trainer-image" / "Dockerfile", ROOT / "trainer-image",
                ["python", "-m", "kubenas_trainer"])
IMAGES = [OPERATOR, TRAINER]
LABELS = {  # OCI annotations each final image must carry, with hadolint's value schema
    "org.opencontainers.image.title": "text", "org.opencontainers.image.description": "text",
    "org.opencontainers.image.version": "semver", "org.opencontainers.image.licenses": "spdx",
    "org.opencontainers.image.source": "url", "org.opencontainers.image.vendor": "text",
}


# -- a small Dockerfile reader ---------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str
    line: int


def instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comments inside a continued instruction
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip(), start))
    assert not pending, f"{path}: a continuation line ends the file"
    return found


def stages(path: Path) -> list[list[Instruction]]:
    """The instructions of each build stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"{path}:{instruction.line}: {instruction.keyword} before the first FROM"
        result[-1].append(instruction)
    return result


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """ENV/ARG/LABEL key=value pairs (and the legacy `ENV KEY value` form)."""
    words = shlex.split(instruction.arguments)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.partition("=")[::2] for word in words)


def final_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stages(path)[-1]:
        if instruction.keyword == "ENV":
            env |= env_pairs(instruction)
    return env


def copy_sources(instruction: Instruction) -> list[str]:
    """The context paths a COPY/ADD reads ([] when it copies from another stage or image)."""
    words = shlex.split(instruction.arguments)
    if any(word.startswith("--from") for word in words):
        return []
    words = [word for word in words if not word.startswith("--")]
    if words and words[0].startswith("["):
        words = json.loads(instruction.arguments[instruction.arguments.index("["):])
    return words[:-1]


def dockerignore_excludes(context: Path):
    """Docker's .dockerignore rule: the last pattern matching a path, or any folder above
    it, decides; `!` re-includes. `*` and `?` stay within a path element, `**` spans them."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    ignore = context / ".dockerignore"
    for line in ignore.read_text().splitlines() if ignore.exists() else []:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((negated, re.compile(regex + r"\Z")))

    def excluded(relative: str) -> bool:
        parts = relative.strip("/").split("/")
        candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        verdict = False
        for negated, regex in rules:
            if any(regex.match(candidate) for candidate in candidates):
                verdict = not negated
        return verdict

    return excluded


# -- hadolint -----------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_hadolint_finds_nothing(image, tmp_path):
    """Not even info or style findings; the OCI labels are required (and no others)."""
    hadolint = executable("hadolint")
    labels = [argument for label, kind in LABELS.items() for argument in ("--require-label", f"{label}:{kind}")]
    # Run away from any user or repository .hadolint.yaml that could silence rules.
    done = subprocess.run([hadolint, "--format", "json", "--strict-labels", *labels, str(image.dockerfile)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_every_hadolint_ignore_is_justified(image):
    lines = image.dockerfile.read_text().splitlines()
    for index, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert index > 0 and lines[index - 1].strip().startswith("#") and "hadolint" not in lines[index - 1], (
                f"{image.dockerfile}:{index + 1}: a `# hadolint ignore=` needs a comment line above saying why")


# -- what the images promise ---------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_every_base_image_has_a_pinned_tag(image):
    names: set[str] = set()
    for stage in stages(image.dockerfile):
        words = [word for word in stage[0].arguments.split() if not word.startswith("--")]
        reference = words[0]
        if reference.lower() not in names:  # a later stage may start FROM an earlier one
            assert "$" not in reference, f"{reference}: a base image chosen by a build argument is not pinned"
            repository, _, digest = reference.partition("@")
            tag = repository.rpartition(":")[2] if ":" in repository.rpartition("/")[2] else ""
            assert tag or digest, f"{reference}: untagged (means latest)"
            assert tag != "latest", f"{reference}: latest is not a pin"
            assert digest or re.search(r"\d+\.\d+\.\d+", tag), f"{reference}: tag {tag!r} is not an exact version"
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2].lower())


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_runs_as_a_numeric_non_root_user(image):
    users = [instruction.arguments for instruction in stages(image.dockerfile)[-1] if instruction.keyword == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}"
    assert not group or (group.isdigit() and int(group) != 0), f"USER {users[-1]}"
    assert user == "65532", "the manifests' runAsUser is 65532"


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_entrypoint(image):
    entrypoints = [instruction for instruction in stages(image.dockerfile)[-1] if instruction.keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT in the final stage"
    assert json.loads(entrypoints[-1].arguments) == image.entrypoint  # exec form: signals reach Python


SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL", re.IGNORECASE)
SECRET_FILE = re.compile(r"(^|/)(\.env(\..*)?|credentials.*|\.netrc|\.npmrc|\.pypirc|id_rsa.*|.*\.pem|.*\.key|"
                         r"\.aws|\.docker|\.kube|kubeconfig.*)$", re.IGNORECASE)


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_no_secrets(image):
    for instruction in instructions(image.dockerfile):
        if instruction.keyword in ("ENV", "ARG"):
            for name, value in env_pairs(instruction).items():
                assert not (SECRET_NAME.search(name) and value), (
                    f"{image.dockerfile}:{instruction.line}: {instruction.keyword} {name} bakes a secret into the image")
        if instruction.keyword in ("COPY", "ADD"):
            for source in copy_sources(instruction):
                assert not SECRET_FILE.search(source.rstrip("/")), f"{instruction.line}: copies {source}"


def test_secret_checks_can_fail(tmp_path):
    """The checks above are not vacuous: a Dockerfile with secrets is caught."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM busybox:1.36.1\nENV API_TOKEN=abc OTHER=1\nARG DB_PASSWORD=hunter2\n"
                          "COPY .env /app/.env\nCOPY --from=build /x /y\n")
    parsed = instructions(dockerfile)
    assert env_pairs(parsed[1]) == {"API_TOKEN": "abc", "OTHER": "1"}
    assert SECRET_NAME.search("API_TOKEN") and SECRET_NAME.search("DB_PASSWORD")
    assert [SECRET_FILE.search(source) is not None for source in copy_sources(parsed[3])] == [True]
    assert copy_sources(parsed[4]) == []


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_copy_sources_exist_in_the_context_and_survive_dockerignore(image):
    excluded = dockerignore_excludes(image.context)
    copied = 0
    for instruction in instructions(image.dockerfile):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(instruction):
            path = image.context / source
            assert path.exists(), f"{image.dockerfile}:{instruction.line}: {source} is not in the context {image.context}"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            shipped = [p for p in files if "__pycache__" not in p.parts]
            assert shipped, f"{source}: nothing to copy"
            for file in shipped:
                relative = file.relative_to(image.context).as_posix()
                assert not excluded(relative), f"{relative} is copied by line {instruction.line} but .dockerignore drops it"
            copied += 1
    assert copied


def test_dockerignore_keeps_the_operator_context_small():
    excluded = dockerignore_excludes(ROOT)
    for path in (".venv/bin/python", ".git/HEAD", "runs/digits/best.json", ".pytest_cache/v", "tests/test_images.py",
                 "operator/kubenas/__pycache__/cli.cpython-311.pyc", ".helm-venv/bin/python", ".env",
                 "kubenas.egg-info/PKG-INFO", "trainer-image/README.md"):
        assert excluded(path), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "operator/kubenas/cli.py", "trainer-image/kubenas_trainer/cli.py"):
        assert not excluded(path), path


def test_dockerignore_reader_follows_docker_rules(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n*.log\n**/cache\n!keep.log\ndocs/\n")
    excluded = dockerignore_excludes(tmp_path)
    assert excluded("a.log") and not excluded("keep.log") and not excluded("sub/a.log")  # * stays in one element
    assert excluded("x/y/cache/file") and excluded("cache") and excluded("docs/index.md")
    assert not excluded("src/main.py")


def test_operator_image_settings():
    env = final_env(OPERATOR.dockerfile)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"  # a read-only root filesystem
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("HOME") == "/tmp" and env.get("MPLCONFIGDIR") == "/tmp"
    exposed = {port for instruction in stages(OPERATOR.dockerfile)[-1] if instruction.keyword == "EXPOSE"
               for port in instruction.arguments.split()}
    assert exposed == {"8080", "8081"}


def test_trainer_image_settings():
    env = final_env(TRAINER.dockerfile)
    assert env.get("HOME") == "/tmp" and env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONPATH") == "/opt/kubenas"  # `python -m kubenas_trainer` from any directory


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_final_stage_labels(image):
    labels: dict[str, str] = {}
    for instruction in stages(image.dockerfile)[-1]:
        if instruction.keyword == "LABEL":
            labels |= env_pairs(instruction)
    assert set(labels) == set(LABELS)
    assert labels["org.opencontainers.image.version"] == "0.1.0"


# -- pinned packages agree with the project --------------------------------------------------


def pip_pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` requirement a RUN pip install names."""
    pins: dict[str, str] = {}
    for instruction in instructions(path):
        if instruction.keyword == "RUN" and "pip install" in instruction.arguments:
            for word in shlex.split(instruction.arguments):
                if "==" in word:
                    requirement = Requirement(word)
                    pins[requirement.name.lower().replace("_", "-")] = str(requirement.specifier).removeprefix("==")
    return pins


def project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(text).name.lower(): Requirement(text) for text in project["dependencies"]}


def test_operator_image_pins_every_dependency_within_the_project_ranges():
    pins = pip_pins(OPERATOR.dockerfile)
    requirements = project_requirements()
    assert set(requirements) <= set(pins), f"unpinned in the image: {sorted(set(requirements) - set(pins))}"
    for name, requirement in requirements.items():
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"


def test_operator_image_uses_cpu_torch_pinned_like_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", makefile, re.MULTILINE).group(1)
    assert pip_pins(OPERATOR.dockerfile)["torch"] == pinned
    torch_install = next(i.arguments for i in instructions(OPERATOR.dockerfile) if "torch==" in i.arguments)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install


def test_trainer_image_installs_what_the_trainer_imports():
    """Every third-party module kubenas_trainer imports is in the image: torch from the
    base image, the rest pinned, within the project's ranges."""
    imported: set[str] = set()
    for file in (ROOT / "trainer-image" / "kubenas_trainer").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"kubenas_trainer", "__future__"}
    distributions = {"sklearn": "scikit-learn"}
    pins = pip_pins(TRAINER.dockerfile)
    base = stages(TRAINER.dockerfile)[-1][0].arguments
    torch_version = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-", base).group(1)
    assert third_party == {"torch", "numpy", "sklearn"}, third_party
    installed = set(pins) | {"torch"}
    assert {distributions.get(module, module) for module in third_party} == installed
    requirements = project_requirements()
    for name, version in {**pins, "torch": torch_version}.items():
        assert requirements[name].specifier.contains(version), f"{name}=={version} vs {requirements[name]}"
    assert torch_version == pip_pins(OPERATOR.dockerfile)["torch"]  # one PyTorch release for both images
