"""The package's layering, checked on the source (an import-linter-style contract, no Caffe needed).

Layers, lowest first; a module imports only from its own layer or below:

    base < algorithms, codec < pycaffe < stages < report < pipeline < cli

``algorithms`` and ``codec`` stand side by side (codec may use the pure
algorithms, not the reverse), and neither they nor ``base`` import pycaffe
(``caffe``) at all, even inside a function or through ``__import__`` /
``importlib.import_module``. Nothing imports the CLI but the CLI itself and
``__main__``. Imports inside functions count too.

Every module belongs to a layer: only ``caffe_dc/__init__.py`` and
``caffe_dc/__main__.py`` stand outside, and they rank as high as the
highest layer they import (``caffe_dc`` re-exports ``load_net`` from
``pycaffe``, so ``from caffe_dc import load_net`` is an upward edge from
anything below ``pycaffe``). A package's ``__init__`` is the module named
by the package, so ``from caffe_dc.base import errors`` depends on
``caffe_dc/base/__init__.py`` too, and cycles through it are cycles. A
dynamic import of a computed name cannot be checked, so it is refused.

``import_graph`` reads a source tree into a graph and ``violations`` is the
contract over that graph; the tests below run it on the real tree (no
violations) and on mutated copies of it (each mutation must be caught).
"""
import ast
import os
import shutil
from typing import Dict, List, NamedTuple, Optional

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caffe_dc")
ROOT = "caffe_dc"
RANK = {"base": 0, "algorithms": 1, "codec": 1, "pycaffe": 2, "stages": 3, "report": 4, "pipeline": 5, "cli": 6}
# Within one rank, which side-by-side layers may use which.
ALLOWED_SIDEWAYS = {("codec", "algorithms")}
NO_CAFFE = ("base", "algorithms", "codec")
LAYERLESS = (ROOT, ROOT + ".__main__")
COMPUTED = "<computed name>"


class Import(NamedTuple):
    target: str        # dotted module (or module.attribute) name, COMPUTED for a dynamic import of an expression
    line: int
    how: str           # "import", "from", "dynamic" or "relative"


# ============================================================================ the graph

def _module_name(pkg_dir: str, path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(pkg_dir))[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _dynamic(node: ast.Call) -> Optional[Import]:
    """``__import__(X)``, ``importlib.import_module(X)`` or ``import_module(X)``: an import of X."""
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    if name not in ("__import__", "import_module"):
        return None
    arg = node.args[0] if node.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return Import(arg.value, node.lineno, "dynamic")
    return Import(COMPUTED, node.lineno, "dynamic")


def _imports(source: str, path: str) -> List[Import]:
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            out.extend(Import(a.name, node.lineno, "import") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                out.append(Import("." * node.level + mod, node.lineno, "relative"))
                continue
            out.append(Import(mod, node.lineno, "from"))
            # `from caffe_dc.stages import encode` imports caffe_dc.stages.encode (if that is a module)
            out.extend(Import(mod + "." + a.name, node.lineno, "from") for a in node.names)
        elif isinstance(node, ast.Call):
            d = _dynamic(node)
            if d is not None:
                out.append(d)
    return out


def import_graph(pkg_dir: str = PKG) -> Dict[str, List[Import]]:
    """Every module of the package at ``pkg_dir`` (dotted name; a package by its own name) -> its imports."""
    graph = {}
    for root, _, files in os.walk(pkg_dir):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path, encoding="utf-8") as fh:
                    graph[_module_name(pkg_dir, path)] = _imports(fh.read(), path)
    return graph


# ============================================================================ the contract

def _resolve(graph, target: str) -> Optional[str]:
    """The module of the tree a name lands in: its longest prefix that is a module (None outside the package)."""
    parts = target.split(".")
    if parts[0] != ROOT:
        return None
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        if name in graph:
            return name
    return ROOT


def layer_of(module: str) -> Optional[str]:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _ranks(graph) -> Dict[str, int]:
    """Rank of every module: its layer's, or for the layerless two the highest layer they import."""
    ranks = {m: RANK[layer_of(m)] for m in graph if layer_of(m) is not None}
    for m in LAYERLESS:
        if m in graph:
            targets = (_resolve(graph, i.target) for i in graph[m])
            ranks[m] = max([ranks[t] for t in targets if t in ranks] or [0])
    return ranks


def _edge_violations(graph, ranks, m: str, imp: Import) -> List[str]:
    where = "%s (line %d)" % (m, imp.line)
    mine = layer_of(m)
    if imp.how == "relative":
        return ["%s: relative import %s; use absolute caffe_dc.* imports" % (where, imp.target)]
    if imp.target == COMPUTED:
        return ["%s: dynamic import of a computed name, which the layering cannot check" % where]
    if imp.target.split(".")[0] == "caffe" and mine in NO_CAFFE:
        return ["%s: %s imports pycaffe (%s)" % (where, mine, imp.target)]
    t = _resolve(graph, imp.target)
    if t is None or t == m or t not in ranks:
        return []
    theirs = layer_of(t)
    if (theirs == "cli" or t == ROOT + ".__main__") and mine != "cli" and m != ROOT + ".__main__":
        return ["%s imports the CLI (%s)" % (where, imp.target)]
    if mine is None:
        return []
    if ranks[t] > ranks[m]:
        return ["%s (%s) imports %s (%s, rank %d), a higher layer" % (where, mine, imp.target, theirs or t, ranks[t])]
    if theirs is not None and ranks[t] == ranks[m] and theirs != mine and (mine, theirs) not in ALLOWED_SIDEWAYS:
        return ["%s (%s) imports sideways into %s" % (where, mine, imp.target)]
    return []


def _cycles(graph) -> List[str]:
    edges = {m: sorted({t for t in (_resolve(graph, i.target) for i in imps) if t in graph and t != m})
             for m, imps in graph.items()}
    found, done = [], set()

    def visit(m, path):
        if m in path:
            found.append("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
            return
        if m in done:
            return
        path.append(m)
        for n in edges[m]:
            visit(n, path)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    return found


def violations(graph: Dict[str, List[Import]]) -> List[str]:
    """Every way ``graph`` breaks the layering contract (module docstring); [] when it holds."""
    out = ["%s belongs to no layer (add its package to RANK, or move it into a layer)" % m
           for m in sorted(graph) if layer_of(m) is None and m not in LAYERLESS]
    ranks = _ranks(graph)
    for m in sorted(graph):
        for imp in graph[m]:
            out.extend(_edge_violations(graph, ranks, m, imp))
    return out + _cycles(graph)


# ============================================================================ the real tree

def test_the_tree_has_every_layer():
    assert {layer_of(m) for m in import_graph()} >= set(RANK)


def test_the_tree_keeps_the_contract():
    assert violations(import_graph()) == []


def test_the_package_root_ranks_with_what_it_reexports():
    # caffe_dc/__init__.py's load_net comes from pycaffe: below pycaffe, `from caffe_dc import load_net` points up
    assert _ranks(import_graph())[ROOT] == RANK["pycaffe"]


# ============================================================================ mutations it must catch

@pytest.fixture
def tree(tmp_path):
    """A copy of the package's Python sources, to mutate."""
    dst = str(tmp_path / ROOT)
    shutil.copytree(PKG, dst, ignore=lambda d, names: [n for n in names if not n.endswith(".py")
                                                       and not os.path.isdir(os.path.join(d, n))])
    assert violations(import_graph(dst)) == []
    return dst


def _append(tree, rel, text):
    path = os.path.join(tree, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text)


def _caught(tree, *fragments):
    found = violations(import_graph(tree))
    assert found, "the mutation passed the contract"
    assert any(all(f in v for f in fragments) for v in found), found
    return found


def test_catches_a_module_directly_under_the_package(tree):
    _append(tree, "helpers.py", "import numpy\n")
    _caught(tree, "caffe_dc.helpers belongs to no layer")


def test_catches_a_subpackage_missing_from_rank_that_imports_caffe(tree):
    _append(tree, "extras/__init__.py", "")
    _append(tree, "extras/glue.py", "import caffe\n\nfrom caffe_dc.base import errors\n")
    _caught(tree, "caffe_dc.extras.glue belongs to no layer")
    _caught(tree, "caffe_dc.extras belongs to no layer")


def test_catches_a_cycle_through_a_package_init(tree):
    _append(tree, "base/__init__.py", "from caffe_dc.base.tables import markdown_table\n")
    _append(tree, "base/tables.py", "def later():\n    from caffe_dc.base import errors\n")
    _caught(tree, "import cycle", "caffe_dc.base ->", "caffe_dc.base.tables")


def test_catches_the_package_root_imported_from_a_low_layer(tree):
    _append(tree, "base/fileio.py", "def load(deploy, dcz):\n    from caffe_dc import load_net\n"
                                    "    return load_net(deploy, dcz)\n")
    _caught(tree, "caffe_dc.base.fileio", "imports caffe_dc.load_net", "a higher layer")


@pytest.mark.parametrize("call", ['__import__("caffe")', 'importlib.import_module("caffe")',
                                  'import_module("caffe.io")', '__import__("caffe", fromlist=["io"]).io'])
def test_catches_a_dynamic_caffe_import_in_a_no_caffe_layer(tree, call):
    _append(tree, "codec/huffman.py", "def probe():\n    import importlib\n    return %s\n" % call)
    _caught(tree, "caffe_dc.codec.huffman", "codec imports pycaffe")


def test_catches_a_dynamic_import_of_a_computed_name(tree):
    _append(tree, "algorithms/stats.py", "def probe(name):\n    return __import__(name)\n")
    _caught(tree, "caffe_dc.algorithms.stats", "computed name")


def test_catches_a_plain_upward_import_and_an_import_of_the_cli(tree):
    _append(tree, "pycaffe/nets.py", "from caffe_dc.report import figures\n")
    _append(tree, "pipeline/storage.py", "def f():\n    from caffe_dc.cli import main\n")
    _caught(tree, "caffe_dc.pycaffe.nets", "a higher layer")
    _caught(tree, "caffe_dc.pipeline.storage", "imports the CLI")


def test_a_dynamic_import_of_a_library_is_fine(tree):
    _append(tree, "base/fileio.py", "def probe():\n    import importlib\n    return importlib.import_module('numpy')\n")
    assert violations(import_graph(tree)) == []


def test_a_long_function_says_why_it_is_long():
    """A function over 60 lines carries a docstring that gives the reason (the team's rule; tools too)."""
    import glob

    root = os.path.dirname(PKG)
    long = []
    for path in sorted(glob.glob(os.path.join(root, "caffe_dc", "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(root, "tools", "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        long += ["%s:%d %s (%d lines)" % (os.path.relpath(path, root), n.lineno, n.name, n.end_lineno - n.lineno + 1)
                 for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.end_lineno - n.lineno + 1 > 60 and not ast.get_docstring(n)]
    assert not long, "functions over 60 lines without a docstring: " + "; ".join(long)
