"""The gate's static checks, read with ``ast`` (the harness never executes a program): the contract, and an
advisory scan for constructs an honest program rarely needs."""

from __future__ import annotations

import ast
from pathlib import Path

from accelbench.builder import programs


def contract_problem(source: str) -> str | None:
    """Why ``source`` cannot be a program (syntax error, no load/generate at top level), or None."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    missing = [name for name in programs.REQUIRED_FUNCTIONS if name not in defined]
    if missing:
        return programs.missing_functions(missing)
    return None


_PROTECTED_MODULES = {"torch", "time", "builtins", "diffusers", "numpy", "random", "PIL", "transformers",
                      "accelerate", "DeepCache", "tomesd", "tgate", "os", "sys", "gc"}
_PROCESS_MODULES = {"threading", "multiprocessing", "subprocess", "concurrent", "_thread", "asyncio"}
_PROCESS_CALLS = {"fork", "forkpty", "system", "popen", "spawnl", "spawnv", "spawnlp", "spawnvp", "execv",
                  "execve", "execl", "execlp", "execvp", "posix_spawn", "kill", "killpg"}
_INTROSPECTION = {"_forward_pre_hooks", "_forward_hooks", "_forward_hooks_with_kwargs", "_global_forward_hooks",
                  "_global_forward_pre_hooks", "__wrapped__", "_getframe", "get_objects", "get_referrers",
                  "settrace", "setprofile", "stack", "currentframe"}
_FILE_CALLS = {"open", "Path", "PurePath", "listdir", "scandir", "walk", "remove", "unlink", "rmtree", "glob",
               "iglob", "makedirs", "mkdir", "rename", "replace", "copy", "copyfile", "chdir"}


def scan_program(source: str) -> list[str]:
    """Advisory findings of a static scan of ``source`` (one line each); empty when nothing looks off."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    findings: list[str] = []
    protected: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "accelbench":
                    findings.append(f"line {node.lineno}: imports accelbench (the harness)")
                if root in _PROCESS_MODULES:
                    findings.append(f"line {node.lineno}: imports {alias.name} (threads or processes)")
                if root in _PROTECTED_MODULES:
                    protected[(alias.asname or alias.name).split(".")[0]] = root
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root == "accelbench":
                findings.append(f"line {node.lineno}: imports from accelbench (the harness)")
            if root in _PROCESS_MODULES:
                findings.append(f"line {node.lineno}: imports from {node.module} (threads or processes)")
            if root in _PROTECTED_MODULES:
                for alias in node.names:
                    protected[alias.asname or alias.name] = root
    protected.setdefault("__builtins__", "builtins")

    def root_name(expr) -> str | None:
        while isinstance(expr, (ast.Attribute, ast.Subscript)):
            expr = expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)):
                name = root_name(target)
                if name in protected:
                    findings.append(f"line {node.lineno}: patches {ast.unparse(target)} ({protected[name]})")
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("setattr", "delattr") and node.args:
                name = root_name(node.args[0])
                if name in protected:
                    findings.append(f"line {node.lineno}: {called}() on {ast.unparse(node.args[0])} "
                                    f"({protected[name]})")
            if called in _PROCESS_CALLS and isinstance(func, ast.Attribute) and root_name(func) in ("os", "pty"):
                findings.append(f"line {node.lineno}: calls {ast.unparse(func)} (processes)")
            if called in _FILE_CALLS:
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        path = arg.value
                        if path.startswith(("/", "~")) or ".." in Path(path).parts:
                            findings.append(f"line {node.lineno}: {called}({path!r}) outside the program's folder")
        if isinstance(node, ast.Attribute) and node.attr in _INTROSPECTION:
            findings.append(f"line {node.lineno}: reads {ast.unparse(node)} (the harness's hooks or frames)")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides):
                others = [s for s in sides if not (isinstance(s, ast.Name) and s.id == "__name__")]
                if not all(isinstance(s, ast.Constant) and s.value == "__main__" for s in others):
                    findings.append(f"line {node.lineno}: behaves according to its module name")
    return sorted(set(findings), key=lambda f: (int(f.split(":")[0].split()[1]), f))
