"""The fenced blocks of README.md and docs/*.md, and what the suite does with each (docs/testing.md, "Docs that run").

A block's language says what it is: shell (`bash`, `sh`, `shell`, `console`) and Python blocks are run against
the quickstart platform (tests/integration/local/test_docs.py), YAML blocks are Raylight manifests that are
validated and rendered (tests/unit/test_docs_blocks.py), and `text`/`json`/`jsonl`/`output` blocks are not code.
A marker, an HTML comment on the line before the fence, says otherwise, with its reason:

    <!-- docs-test: cluster-only: needs kubectl and a cluster -->   checked without a cluster instead (syntax, and
                                                                    the `raylight validate|render` lines it holds)
    <!-- docs-test: skip: installs and runs the whole suite -->     not run (say why)
    <!-- docs-test: fragment: Pipeline -->                          a YAML part of a Pipeline (or ModelDeployment,
                                                                    FineTune) spec: validated inside a minimal one
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent.parent
SHELL = frozenset({"bash", "sh", "shell", "console"})
PYTHON = frozenset({"python", "py", "python3"})
YAML = frozenset({"yaml", "yml"})
NOT_CODE = frozenset({"text", "json", "jsonl", "output"})
# What a marker may say: the action, then its reason (for a fragment: the kind it is part of).
ACTIONS = frozenset({"skip", "cluster-only", "fragment"})
FRAGMENT_KINDS = frozenset({"ModelDeployment", "Pipeline", "FineTune"})
# Commands of a cluster (or an image build) that a block run on one machine cannot use: such a block needs a marker.
CLUSTER_COMMANDS = re.compile(r"(?m)^\s*(?:\S+=\S+\s+)*(?:kubectl|helm|docker|podman|kind|minikube)\b|"
                              r"\bscripts/build-images\.sh\b")
# An address inside a cluster: only a pod (or a port-forward) reaches it.
CLUSTER_ADDRESS = re.compile(r"\.svc\b")
# The one address the docs give the local platform; the runner points it at the platform under test.
DOCS_URL = "http://127.0.0.1:8000"
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->", re.S)


@dataclass(frozen=True)
class Marker:
    action: str
    reason: str


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str  # the info string's first word, lower case ("" when none)
    code: str
    marker: Marker | None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def kind(self) -> str:
        """shell, python, yaml, not-code, or unknown (a language the suite has no rule for)."""
        for kind, langs in (("shell", SHELL), ("python", PYTHON), ("yaml", YAML), ("not-code", NOT_CODE)):
            if self.lang in langs:
                return kind
        return "unknown"

    @property
    def action(self) -> str:
        """What the suite does: run (shell, Python), validate (a YAML manifest), fragment, skip, cluster-only,
        none (not code)."""
        if self.marker is not None:
            return self.marker.action
        return {"shell": "run", "python": "run", "yaml": "validate"}.get(self.kind, "none")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse_marker(body: str) -> Marker:
    action, _, reason = body.partition(":")
    return Marker(action.strip(), " ".join(reason.split()))


def _html_of(token: Token) -> str:
    """The raw HTML a token holds: a block of it, or the inline HTML of a paragraph (not code spans)."""
    if token.type == "html_block":
        return token.content
    if token.type == "inline":
        return "".join(child.content for child in token.children or [] if child.type == "html_inline")
    return ""


def parse(text: str, file: str) -> tuple[list[Block], list[str]]:
    """Every code block of a Markdown text (fenced or indented) with the marker right before it, and the problems
    found: markers that precede no code block, or name an unknown action or no reason."""
    tokens = MarkdownIt("commonmark").parse(text)
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[Marker, int] | None = None
    for token in tokens:
        line = token.map[0] + 1 if token.map else 0
        found = MARKER.search(_html_of(token))
        if token.type in ("fence", "code_block"):  # an indented block has no language: the rules refuse it
            marker = pending[0] if pending else None
            blocks.append(Block(file, line, token.info.strip().split(" ")[0].lower() if token.info.strip() else "",
                                token.content, marker))
            pending = None
            continue
        if pending is not None and token.type not in ("list_item_open", "bullet_list_open", "ordered_list_open"):
            problems.append(f"{file}:{pending[1]}: a docs-test marker must be on the line right before a fenced block")
            pending = None
        if found is None:
            continue
        if token.type != "html_block":
            problems.append(f"{file}:{line}: a docs-test marker must be an HTML comment on its own line")
            continue
        marker = parse_marker(found.group("body"))
        if marker.action not in ACTIONS:
            problems.append(f"{file}:{line}: unknown docs-test action {marker.action!r} (one of {sorted(ACTIONS)})")
        elif not marker.reason:
            problems.append(f"{file}:{line}: docs-test: {marker.action} needs a reason after a colon")
        pending = (marker, line)
    if pending is not None:
        problems.append(f"{file}:{pending[1]}: a docs-test marker must be on the line right before a fenced block")
    return blocks, problems


def check(block: Block) -> list[str]:
    """Why a block breaks the rules (docs/testing.md): every block has a language the suite knows; shell and
    Python blocks are run unless a marker gives the reason they are not; what needs a cluster is marked so."""
    where = f"{block.id} ({block.lang or 'no language'})"
    if block.kind == "unknown":
        return [f"{where}: fence the block and give it a language: {sorted(SHELL | PYTHON | YAML | NOT_CODE)}"]
    if block.marker is None:
        if (block.kind == "shell" and CLUSTER_COMMANDS.search(block.code)) or (
                block.kind in ("shell", "python") and CLUSTER_ADDRESS.search(block.code)):
            return [f"{where}: needs a cluster (a cluster tool or address); mark it "
                    "<!-- docs-test: cluster-only: REASON -->"]
        if block.kind == "yaml" and not re.search(r"(?m)^apiVersion:", block.code):
            return [f"{where}: not a whole manifest; mark it <!-- docs-test: fragment: KIND --> (the kind it is "
                    "part of) or give it apiVersion, kind and metadata"]
        return []
    if block.kind == "not-code":
        return [f"{where}: a {block.lang} block is not code and is never run: remove its docs-test marker"]
    if block.marker.action == "fragment":
        if block.kind != "yaml":
            return [f"{where}: only a YAML block can be a fragment"]
        if block.marker.reason not in FRAGMENT_KINDS:
            return [f"{where}: a fragment names the kind it is part of: {sorted(FRAGMENT_KINDS)}"]
    return []


def collect(root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """Every block of the docs and every problem (misplaced markers, blocks breaking the rules)."""
    blocks: list[Block] = []
    problems: list[str] = []
    for path in doc_files(root):
        found, bad = parse(path.read_text(), str(path.relative_to(root)))
        blocks += found
        problems += bad
    for block in blocks:
        problems += check(block)
    return blocks, problems


def shell_script(block: Block) -> str:
    """The commands of a shell block: a console block's `$ ` lines (and their `\\` continuations), else all of it."""
    if block.lang != "console":
        return block.code
    commands: list[str] = []
    continued = False
    for line in block.code.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line[2:] if line.startswith("$ ") and not continued else line)
            continued = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def expected_labels(block: Block) -> list[str]:
    """A console block's output lines that are labels ("Sources:"): the loose check of what a run prints."""
    if block.lang != "console":
        return []
    return [line.strip() for line in block.code.splitlines()
            if not line.startswith("$ ") and re.fullmatch(r"[A-Z][\w ]*:", line.strip())]


def raylight_commands(code: str) -> list[str]:
    """The `raylight validate` and `raylight render` lines of a shell block: they need no cluster, so a
    cluster-only block's are run too."""
    return [line.split("#")[0].strip() for line in code.splitlines()
            if re.match(r"\s*raylight (validate|render)\b", line)]


def commands(code: str) -> list[str]:
    """A shell block's commands, one per line: `\\` continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line]
