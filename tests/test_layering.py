"""The package's layering, checked on the source (an import-linter-style contract, no Caffe needed).

Layers, lowest first; a module imports only from its own layer or below:

    base < algorithms, codec < pycaffe < stages < report < pipeline < cli

``algorithms`` and ``codec`` stand side by side (codec may use the pure
algorithms, not the reverse), and neither they nor ``base`` import pycaffe
(``caffe``) at all, even inside a function. Nothing imports the CLI but the
CLI itself and ``__main__``. Imports inside functions count too.
"""
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caffe_dc")
RANK = {"base": 0, "algorithms": 1, "codec": 1, "pycaffe": 2, "stages": 3, "report": 4, "pipeline": 5, "cli": 6}
# Within one rank, which side-by-side layers may use which.
ALLOWED_SIDEWAYS = {("codec", "algorithms")}
NO_CAFFE = ("base", "algorithms", "codec")


def _modules():
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                yield rel, path


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "%s: relative import; use absolute caffe_dc.* imports" % path
            mod = node.module or ""
            yield mod
            for a in node.names:  # `from caffe_dc.stages import encode` imports caffe_dc.stages.encode
                yield mod + "." + a.name


def _layer(dotted):
    parts = dotted.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else None


MODULES = sorted(_modules())


def test_the_tree_has_every_layer():
    layers = {_layer(m) for m, _ in MODULES}
    assert set(RANK) <= layers


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(module, path):
    mine = _layer(module)
    for imp in _imports(path):
        if mine in NO_CAFFE:
            assert imp.split(".")[0] != "caffe", "%s imports pycaffe (%s)" % (module, imp)
        if not imp.startswith("caffe_dc."):
            continue
        theirs = _layer(imp)
        if theirs is None or mine is None:
            # caffe_dc/__init__.py and __main__.py: only __main__ may reach the CLI
            if mine is None and theirs == "cli":
                assert module == "caffe_dc.__main__", "%s imports the CLI" % module
            continue
        if theirs == "cli":
            assert mine == "cli", "%s imports the CLI (%s)" % (module, imp)
        assert RANK[theirs] <= RANK[mine], "%s (%s) imports %s (%s), a higher layer" % (module, mine, imp, theirs)
        if RANK[theirs] == RANK[mine] and theirs != mine:
            assert (mine, theirs) in ALLOWED_SIDEWAYS, "%s (%s) imports sideways into %s" % (module, mine, imp)


def test_no_import_cycles_between_modules():
    names = {m for m, _ in MODULES}
    graph = {m: {i for i in _imports(p) if i in names and i != m} for m, p in MODULES}
    seen, stack = set(), []

    def visit(m, path):
        if m in path:
            cyc = path[path.index(m):] + [m]
            raise AssertionError("import cycle: " + " -> ".join(cyc))
        if m in seen:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n, path)
        path.pop()
        seen.add(m)

    for m in sorted(graph):
        visit(m, [])
