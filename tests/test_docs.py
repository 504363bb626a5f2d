"""The documentation stays short, current and correct: README.md and docs/*.md.

Fast and offline: no network, no training, no subprocess. The command tree is read from the click
group ``ensemble.cli.main`` in process (importing it loads no torch).

* README.md has at most :data:`README_MAX_LINES` lines;
* no page mentions "issue #" (the docs describe the project as it is, by topic);
* every relative markdown link ``[text](target)`` resolves to an existing file or folder;
* every ``ensemble <verb> [<subverb>]`` written in a code span or code block names a real command,
  and every ``--option`` on that line exists for that command.
"""
import re
from pathlib import Path

import click
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
#: Options every command and group accepts.
ALWAYS_VALID = {"-h", "--help", "--version"}
#: How a command line may start (after optional ``$ `` and leading spaces).
PROGRAMS = ("ensemble", ".venv/bin/ensemble")

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
OPTION = re.compile(r"(?<![\w-])--[A-Za-z0-9][A-Za-z0-9-]*")
COMMENT = re.compile(r"\s#.*$")


def doc_files():
    """README.md and every docs/*.md, in a fixed order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def rel(path):
    return path.relative_to(ROOT).as_posix()


def split_code(text):
    """``(prose, code)``: lists of ``(line number, line)``; code holds the lines inside fenced blocks,
    with shell continuations (a trailing backslash) joined onto the line they start on."""
    prose, code = [], []
    in_block, pending, pending_no = False, None, None
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            if pending is not None:
                code.append((pending_no, pending))
                pending = None
            in_block = not in_block
            continue
        if not in_block:
            prose.append((number, line))
            continue
        if pending is not None:
            pending, line = pending + " " + line.strip(), None
        else:
            pending, pending_no, line = line, number, None
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1]
        else:
            code.append((pending_no, pending))
            pending = None
    if pending is not None:
        code.append((pending_no, pending))
    return prose, code


def command_line(text):
    """``text`` without a leading ``$ `` and spaces if it is an ``ensemble ...`` command line, else None."""
    text = text.strip()
    if text.startswith("$ "):
        text = text[2:].lstrip()
    for program in PROGRAMS:
        if text == program or text.startswith(program + " "):
            return text
    return None


def invocations(text):
    """``(line number, command line)`` of every ``ensemble ...`` in a code block or a code span."""
    prose, code = split_code(text)
    found = []
    for number, line in code:
        line = COMMENT.sub("", line)
        for segment in re.split(r"&&|\|\||;|\s\|\s", line):
            command = command_line(segment)
            if command:
                found.append((number, command))
    for number, line in prose:
        for match in CODE_SPAN.finditer(line):
            command = command_line(match.group(2))
            if command:
                found.append((number, command))
    return found


def command_tree(group=None, path=()):
    """``{("data", "inspect"): click command, ("train",): ..., (): main, ...}`` from ``ensemble.cli.main``."""
    if group is None:
        from ensemble.cli import main

        group = main
    tree = {path: group}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            tree.update(command_tree(command, (*path, name)))
        else:
            tree[(*path, name)] = command
    return tree


def valid_options(command):
    """Every option string ``command`` accepts: its params' ``opts`` and ``secondary_opts``, plus help/version."""
    names = set(ALWAYS_VALID)
    for param in command.params:
        names.update(param.opts)
        names.update(getattr(param, "secondary_opts", ()))
    return names


def check_invocation(line, tree):
    """Problems with one ``ensemble ...`` command line: an unknown (sub)command or an unknown option."""
    tokens = line.replace("\\|", "|").split()
    path, i = (), 1
    while i < len(tokens) and isinstance(tree[path], click.Group):
        token = tokens[i]
        if token.startswith("-"):
            break
        if (*path, token) not in tree:
            known = sorted(name for name in tree[path].commands)
            where = " ".join(("ensemble", *path))
            return [f"unknown command {token!r} after '{where}' (known: {', '.join(known)})"]
        path, i = (*path, token), i + 1
    allowed = valid_options(tree[path])
    rest = " ".join(tokens[i:])
    name = " ".join(("ensemble", *path))
    return [f"unknown option {option!r} for '{name}'" for option in OPTION.findall(rest) if option not in allowed]


def command_problems(path, text, tree):
    """``file:line: `command`: problem`` for every bad invocation in ``text`` (the contents of ``path``)."""
    return [f"{path}:{number}: `{line}`: {problem}"
            for number, line in invocations(text) for problem in check_invocation(line, tree)]


def link_targets(text):
    """``(line number, target)`` of every markdown link outside code blocks and code spans."""
    prose, _ = split_code(text)
    found = []
    for number, line in prose:
        line = CODE_SPAN.sub("code", line)
        for match in LINK.finditer(line):
            found.append((number, match.group(1)))
    return found


def is_external(target):
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target)) or target.startswith("#")


# ---------------------------------------------------------------------------------------------- tests


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines, at most {README_MAX_LINES}"


def test_docs_folder_has_its_pages():
    for page in ("README.md", "results.md", "experiments.md", "performance.md", "reference.md", "design.md"):
        assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing"


def test_no_issue_numbers():
    problems = [f"{rel(path)}:{number}: {line.strip()!r}"
                for path in doc_files()
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                if "issue #" in line.lower()]
    assert not problems, "pages mention 'issue #' (name the topic instead):\n" + "\n".join(problems)


def test_relative_links_resolve():
    problems, checked = [], 0
    for path in doc_files():
        for number, target in link_targets(path.read_text(encoding="utf-8")):
            if is_external(target):
                continue
            checked += 1
            file_part = target.split("#", 1)[0]
            if not (path.parent / file_part).exists():
                problems.append(f"{rel(path)}:{number}: link target {target!r} does not exist "
                                f"(resolved against {rel(path.parent) or '.'}/)")
    assert checked > 10, f"only {checked} relative links found: is the link parser broken?"
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_ensemble_commands_and_options_exist():
    tree = command_tree()
    problems, checked = [], 0
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        checked += len(invocations(text))
        problems += command_problems(rel(path), text, tree)
    assert checked > 20, f"only {checked} ensemble command lines found: is the parser broken?"
    assert not problems, "commands or options that do not exist:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------- the checkers themselves


def test_command_tree_has_every_verb():
    tree = command_tree()
    verbs = {" ".join(path) for path in tree if path}
    assert {"data", "data inspect", "data clean", "train", "baseline", "control", "fuse", "evaluate", "predict",
            "score", "run", "export"} <= verbs
    assert "--no-stack" in valid_options(tree[("predict",)])  # secondary_opts count
    assert "--replicas" in valid_options(tree[("baseline",)])


@pytest.mark.parametrize("markdown, expected", [
    ("Run `ensemble trian --run r`.", ["unknown command 'trian'"]),
    ("Run `ensemble data inspekt`.", ["unknown command 'inspekt' after 'ensemble data'"]),
    ("`ensemble train --run r --jbos 2`", ["unknown option '--jbos' for 'ensemble train'"]),
    ("```bash\n$ ensemble evaluate --run r \\\n    --curvee   # comment --ignored\n```",
     ["unknown option '--curvee' for 'ensemble evaluate'"]),
    ("```\nensemble fuse --run r && ensemble predict --tta flip --oops\n```",
     ["unknown option '--oops' for 'ensemble predict'"]),
    ("| `ensemble predict [--stack\\|--no-stack] --out s.csv` |", []),
    ("`ensemble --version`, `ensemble data inspect -h`, `ensemble/cli.py`, `time ensemble x --y`", []),
])
def test_command_checker(markdown, expected):
    problems = command_problems("page.md", markdown, command_tree())
    assert len(problems) == len(expected), problems
    for problem, wanted in zip(problems, expected):
        assert problem.startswith("page.md:") and wanted in problem


def test_link_parser():
    text = "See [a](docs/a.md#x), ![img](b.png \"title\"), [web](https://x.y), [top](#here).\n" \
           "`[not](a/link)`\n```\n[not](either)\n```\n"
    assert link_targets(text) == [(1, "docs/a.md#x"), (1, "b.png"), (1, "https://x.y"), (1, "#here")]


def test_readme_reference_table_is_the_one_the_report_gives():
    """The README's table of the shipped run is what `python scripts/reference_table.py` makes of its report."""
    module = load_script("reference_table")
    assert module.readme_block((ROOT / "README.md").read_text()) == module.reference_table()


SECTION = re.compile(r"^### (.+)$")
CELL_BORDER = re.compile(r"(?<!\\)\|")  # a table's cell border; an escaped \| is part of a cell


def documented_defaults():
    """``(verbs, option, documented default, line number)`` of every one-option row of the option tables in
    docs/reference.md's CLI sections (``### `ensemble train` / `ensemble baseline` ...``)."""
    rows, verbs = [], ()
    for number, line in enumerate((ROOT / "docs" / "reference.md").read_text().splitlines(), start=1):
        section = SECTION.match(line)
        if section:
            verbs = tuple(tuple(name.split()[1:]) for name in re.findall(r"`(ensemble [a-z ]+?)`", section.group(1)))
            continue
        cells = [cell.strip() for cell in CELL_BORDER.split(line)[1:-1]] if line.startswith("|") else []
        if not (verbs and len(cells) >= 2):
            continue
        options = OPTION.findall(cells[0].split("`")[1] if "`" in cells[0] else "")
        if cells[0].count("`--") == 1 and len(options) == 1:
            rows.append((verbs, options[0], cells[1].replace("`", "").strip(), number))
    return rows


def test_documented_defaults_are_the_real_ones():
    """Every option table row that states a literal default agrees with the option's real default."""
    tree = command_tree()
    problems, checked = [], 0
    for verbs, option, documented, number in documented_defaults():
        for verb in verbs:
            params = [p for p in tree[verb].params if option in p.opts]
            if not params or params[0].default is None or documented in ("", "see above", "as above"):
                continue  # no literal default, or a rule described in words
            real = params[0].default
            if params[0].is_flag and not isinstance(real, bool):  # click's "unset" sentinel of a flag: off
                real = False
            expected = "off" if real is False else str(real)
            checked += 1
            if documented != expected:
                problems.append(f"docs/reference.md:{number}: {option} of ensemble {' '.join(verb)}: documented "
                                f"{documented!r}, the option's default is {expected!r}")
    assert checked >= 10, f"only {checked} documented defaults checked: is the table parser broken?"
    assert not problems, "\n".join(problems)
