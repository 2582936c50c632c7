"""Keep a results document honest: its tables are the experiments' own files, its commands theirs.

A results document (``docs/RESULTS.md``) embeds each experiment's table between markers::

    <!-- include results/compare-dense/results.md -->
    ...the file's text, verbatim...
    <!-- end include -->

``python -m moa.experiments.report docs/RESULTS.md`` rewrites every block from its file
(``--check`` only reports). :func:`check` also verifies that every linked image exists
and that every ``moa compare`` / ``moa scale`` command printed in a ``bash`` block with an
``--out`` configures exactly the experiment stored there: the command is parsed with the
CLI's own argument definitions (:mod:`moa.experiments.settings`) and its preset +
overrides and sweep settings are compared with the ``base_config`` / ``compare_config``
/ ``scale_config`` in that folder's results file.
Paths in ``--out`` are relative to the repository root (the document's parent's parent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- include (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
BASH = re.compile(r"```bash\n(.*?)```", re.S)
RESULT_FILES = {"compare": ("results.json", "compare_config"), "scale": ("scaling.json", "scale_config")}


def sync(doc: Path) -> int:
    """Rewrite every include block of ``doc`` from its file; returns how many changed."""
    doc = Path(doc)
    text = doc.read_text()
    changed = 0

    def fill(m: re.Match) -> str:
        nonlocal changed
        body = (doc.parent / m.group(2)).read_text()
        body = body if body.endswith("\n") else body + "\n"
        changed += body != m.group(3)
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(fill, text)
    if new != text:
        doc.write_text(new)
    return changed


def commands(doc_text: str) -> list[list[str]]:
    """The ``moa`` command lines of the document's bash blocks (leading VAR=value dropped)."""
    out = []
    for block in BASH.findall(doc_text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0]) if line.strip() and not line.lstrip().startswith("#") else []
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            if words and words[0] == "moa":
                out.append(words[1:])
    return out


def command_problems(argv: list[str], root: Path) -> list[str]:
    """Why ``moa argv`` does not configure the experiment stored at its ``--out`` (empty if it does)."""
    from moa.config import apply_overrides, dumps
    from moa.experiments.settings import SWEEPS, parse_sweep_command
    from moa.presets import get_preset

    line = "moa " + " ".join(argv)
    if not argv or argv[0] not in RESULT_FILES:
        return []
    args = parse_sweep_command(argv)
    if not args.out:
        return []
    name, key = RESULT_FILES[args.command]
    path = root / args.out / name
    if not path.exists():
        return [f"`{line}`: {path} does not exist"]
    stored = json.loads(path.read_text())
    problems = []
    base = json.loads(dumps(apply_overrides(get_preset(args.preset), args.overrides)))
    # a config key added after the experiment ran is absent from its base_config: it ran with the
    # key's behaviour from before, i.e. the preset's value, so only a command changing it differs
    base = _without_new_keys(base, stored["base_config"], json.loads(dumps(get_preset(args.preset))))
    if base != stored["base_config"]:
        diffs = _diff(base, stored["base_config"])
        problems.append(f"`{line}`: its run config differs from {path}'s base_config ({'; '.join(diffs[:3])})")
    sweep = json.loads(json.dumps(dataclasses.asdict(SWEEPS[args.command][1](args))))
    # a results file written before a setting existed is compared on the settings it records
    # (e.g. protocol-1 compares have no search_seeds: docs/RESULTS.md says how they chose the LR)
    if set(stored[key]) <= set(sweep):
        # …but a command that sets such a setting asks for something the file cannot have
        for k in sorted(set(sweep) - set(stored[key])):
            flag = "--" + k.replace("_", "-")
            if any(w == flag or w.startswith(flag + "=") for w in argv):
                problems.append(f"`{line}`: sets {flag}, which {path} does not record (written before it existed)")
        sweep = {k: sweep.get(k) for k in stored[key]}
    if sweep != stored[key]:
        problems.append(f"`{line}`: its {key} {sweep} differs from {path}'s {stored[key]}")
    return problems


def _without_new_keys(cfg: dict, stored: dict, preset: dict) -> dict:
    """``cfg`` without the keys ``stored`` lacks where ``cfg`` keeps the ``preset``'s value."""
    out = {}
    for key, value in cfg.items():
        if key not in stored:
            if value != preset.get(key):
                out[key] = value
        elif isinstance(value, dict) and isinstance(stored[key], dict):
            out[key] = _without_new_keys(value, stored[key], preset.get(key) or {})
        else:
            out[key] = value
    return out


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} vs {b!r}"]


def check(doc: Path, root: Path | None = None) -> list[str]:
    """Every way ``doc`` disagrees with the files it cites (empty when it is in sync)."""
    doc = Path(doc)
    root = Path(root) if root else doc.resolve().parent.parent
    text = doc.read_text()
    problems = []
    for m in BLOCK.finditer(text):
        f = doc.parent / m.group(2)
        if not f.exists():
            problems.append(f"include {m.group(2)}: no such file")
            continue
        body = f.read_text()
        if (body if body.endswith("\n") else body + "\n") != m.group(3):
            problems.append(f"include {m.group(2)}: the document's copy differs from the file (run the sync)")
    for src in IMAGE.findall(text):
        if not src.startswith(("http://", "https://")) and not (doc.parent / src).exists():
            problems.append(f"image {src}: no such file")
    for argv in commands(text):
        problems.extend(command_problems(argv, root))
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moa.experiments.report",
                                description="Refresh (or --check) the include blocks of a results document.")
    p.add_argument("doc", type=Path)
    p.add_argument("--check", action="store_true", help="only report disagreements; exit 1 if any")
    args = p.parse_args(argv)
    if not args.doc.is_file():
        p.error(f"{args.doc} is not a file; give a results document such as docs/RESULTS.md")
    if not args.check:
        print(f"{sync(args.doc)} block(s) refreshed")
    problems = check(args.doc)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
