"""Dependency arrows point one way. Every `import` in the package (module-level and function-level, parsed with
`ast`) must go to a strictly lower layer of LAYERS (or stay inside its own package), and the module graph has no
cycle. LAYERS is the one statement of the order; README "Where things are" shows it.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "vggrpo_jax"

# Lowest first. An entry names a top-level module or package of vggrpo_jax ("lgm") or a module in one
# ("lgm.pipeline"); the longest matching entry places a module.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("errors",)),
    ("config files", ("config_files",)),
    ("foundation", ("cli", "checkpoint", "geometry", "parallel", "visualize", "zoo", "shipped")),
    ("networks", ("models",)),
    ("numerics and infrastructure", ("convert", "rewards", "rl", "training")),
    ("config, data, policy, evaluation metrics", ("config", "data", "policy", "evaluation")),
    ("LGM, preference data, guidance", ("lgm", "dpo", "guidance")),
    ("backbones", ("backbones",)),
    ("training jobs", ("lgm.pipeline", "toy_vae", "geometry_model", "sft")),
    ("GRPO job", ("grpo",)),  # a toy GRPO run builds its LGM first
    ("sampling", ("sampling", "guidance_aot")),
    ("entry points", ("train", "train_lgm", "evaluate", "train_vae", "train_geometry", "finetune", "sample")),
]


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, PKG)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def _imports(module: str, path: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported vggrpo_jax module, line) for every import statement anywhere in the file."""
    tree = ast.parse(open(path).read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from pkg.mod import name` imports pkg.mod.
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return [(name, line) for name, line in out if name == PKG or name.startswith(PKG + ".")]


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The module an imported name refers to: itself if it is a module, else its longest module prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> tuple[int, str]:
    rel = module[len(PKG) + 1:]
    best = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if rel == entry or rel.startswith(entry + "."):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it (or its package) to LAYERS in tests/test_layering.py")
    return best


def _graph():
    modules = _modules()
    edges = {}
    for module, path in modules.items():
        targets = {}
        for name, line in _imports(module, path, path.endswith("__init__.py")):
            target = _resolve(name, modules)
            if target and target != module and target != PKG:
                targets.setdefault(target, line)
        edges[module] = targets
    return modules, edges


def test_every_import_goes_down_the_layers():
    modules, edges = _graph()
    bad = []
    for module in sorted(modules):
        if module == PKG:
            continue
        here, unit = _layer(module)
        for target, line in edges[module].items():
            there, target_unit = _layer(target)
            same_package = unit.split(".")[0] == target_unit.split(".")[0] and there == here
            if there > here or (there == here and not same_package):
                bad.append(f"{modules[module]}:{line}: {module} ({LAYERS[here][0]}) imports {target} "
                           f"({LAYERS[there][0]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycles():
    modules, edges = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in edges.get(m, {}):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)


def test_the_checker_sees_violations(tmp_path, monkeypatch):
    """The rules can fail: a function-level upward import and a cycle are both reported."""
    pkg = tmp_path / PKG
    (pkg / "geometry").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "geometry" / "__init__.py").write_text("def f():\n    from vggrpo_jax.train import main\n")
    (pkg / "train.py").write_text("from vggrpo_jax.geometry import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match=r"vggrpo_jax.geometry \(foundation\) imports vggrpo_jax.train"):
        test_every_import_goes_down_the_layers()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()


def test_readme_shows_the_order():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name, entries in LAYERS:
        assert f"{name}: {', '.join(entries)}" in readme, f"README 'Where things are' lacks the layer line for {name}"
