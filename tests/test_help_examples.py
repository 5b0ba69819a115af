"""Every example a command's --help gives, and every command the READMEs show, parses (no Caffe needed).

An example is the text after "e.g." in an option's help, each alternative joined by "or"; it must
pass the option's own type, and a per-layer example must name layers of a net the command runs on
(the paper's nets; for ``compress``, ``examples/tiny_resnet``). A README command is a line of a code
block that runs ``./dc COMMAND`` or ``caffe-dc COMMAND``; the whole command line must parse.
"""
import argparse
import glob
import os
import re
import shlex

import pytest

from caffe_dc.base import paper
from caffe_dc.base.layer_policy import is_prunable
from caffe_dc.cli import COMMANDS, build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_NET = os.path.join(ROOT, "examples", "tiny_resnet", "train_val.prototxt")
NAMES = {name for name, _, _ in COMMANDS}


def subcommands():
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def examples(help_text: str):
    """The examples of a help text: after each "e.g.", the first word of every "or" alternative."""
    out = []
    for tail in re.findall(r"e\.g\. (.*?)(?:\(default|$)", help_text or "", flags=re.S):
        for alt in re.split(r"\bor\b", tail):
            word = alt.split()[0].rstrip(";,.)") if alt.split() else ""
            if word:
                out.append(word)
    return out


def layers_of(command: str):
    if command == "compress":   # a plain reading of the prototxt: protobuf may be missing outside the image
        with open(OWN_NET) as f:
            found = re.findall(r'layer\s*{\s*name:\s*"([^"]+)"\s*type:\s*"([^"]+)"', f.read())
        assert found
        return {name for name, t in found if is_prunable(t)}
    return {r.layer for net in paper.NETS for r in paper.layer_rows(net)}


def help_cases():
    _, commands = subcommands()
    for name, p in commands.items():
        for a in p._actions:
            if a.type is not None and a.option_strings:
                for ex in examples(a.help):
                    yield pytest.param(name, a, ex, id="%s %s %s" % (name, a.option_strings[-1], ex))


@pytest.mark.parametrize("command, action, example", list(help_cases()))
def test_every_help_example_parses(command, action, example):
    value = action.type(example)
    if isinstance(value, dict):   # a per-layer map: the layers it names must exist
        named = {k for k in value if k != "*"}
        assert named <= layers_of(command), "%s names %s, no layer of the nets %s runs on" % (
            example, ", ".join(sorted(named - layers_of(command))), command)


def test_the_help_examples_are_found():
    """The extraction itself: a command's layer-map options do give examples, and a wrong one is caught."""
    found = {(c.values[0], c.values[1].option_strings[-1]) for c in help_cases()}
    for want in [("reproduce", "--bits"), ("reproduce", "--density"), ("compress", "--bits"), ("compress", "--density"),
                 ("quantize", "--bits"), ("choose", "--bits"), ("encode", "--index-bits"), ("choose", "--target-rate")]:
        assert want in found, want
    assert examples("override weight bits, e.g. 5 or fc=4") == ["5", "fc=4"]
    assert "fc" not in layers_of("compress")


def readme_commands():
    for path in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "examples", "*", "README.md"))):
        with open(path, encoding="utf-8") as f:
            blocks = re.findall(r"^```[^\n]*\n(.*?)^```", f.read(), flags=re.S | re.M)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                for i, w in enumerate(words):
                    # caffe-dc's commands, not ./dc's own verbs (build, test, dev, exec) or an image's name
                    if w in ("./dc", "caffe-dc") and words[i + 1:i + 2] and words[i + 1] in NAMES:
                        yield pytest.param(words[i + 1:], id="%s: %s" % (os.path.relpath(path, ROOT), line.strip()))
                        break


def test_the_readme_commands_are_found():
    cmds = [c.values[0] for c in readme_commands()]
    assert len(cmds) >= 10
    assert {c[0] for c in cmds} >= {"reproduce", "compress", "choose", "encode", "decode", "sensitivity"}


@pytest.mark.parametrize("argv", list(readme_commands()))
def test_every_readme_command_parses(argv, capsys):
    parser, _ = subcommands()
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail("`%s` does not parse: %s" % (" ".join(argv), capsys.readouterr().err.strip() or e))


def test_the_readme_reads_on_a_screen():
    """The front page is read in a browser and a terminal: no line, table rows included, over 200 characters."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        long = [(i, len(line.rstrip("\n"))) for i, line in enumerate(f, 1) if len(line.rstrip("\n")) > 200]
    assert not long, "README.md lines over 200 characters (line, length): %s" % long
