"""Find, read and parse the source files of a build, following imports.

Input: the project and the paths named on the command line (files or
directories).  Output: a `Sources` with every file's text and digest, each
file checked on its own (`checker.check_file`), the resolved import graph and
the diagnostics met on the way.  Files are parsed and checked in parallel when
there is enough text to pay for it (`forking`).

`Loader` is the pure stage.  Its two seams, `read` (a file's text) and
`check_files` (each file's checked form), are what the incremental build
(`_incremental.cache.CachedLoader`) overrides to serve files from the cache.
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from oneiricc._build.checker import CheckedFile, check_file
from oneiricc._build.forking import map_forked
from oneiricc._language.parser import SyntaxErrors, decode_source, parse, parser
from oneiricc._language.recovery import Skipped
from oneiricc._build.project import Project, ProjectError
from oneiricc._language import nodes as n
from oneiricc._language.diagnostics import CompileError, Diagnostic

SOURCE_SUFFIX = ".oneiric"
_Job = TypeVar("_Job")
_Outcome = TypeVar("_Outcome")


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # relative to the project root, "/"-separated
    text: str
    sha256: str


@dataclass(slots=True)
class Sources:
    files: dict[str, SourceFile] = field(default_factory=dict)
    checked: dict[str, CheckedFile] = field(default_factory=dict)  # every file that parsed
    # Files with syntax errors, checked as far as they parse, and what of each is skipped.
    broken: dict[str, Skipped] = field(default_factory=dict)
    modules: dict[str, n.Module] = field(default_factory=dict)  # syntax trees, on request
    imports: dict[str, tuple[str, ...]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def texts(self) -> dict[str, str]:
        return {path: f.text for path, f in self.files.items()}

    def visible_from(self, path: str) -> list[str]:
        """`path` and every file it imports, directly or not, in a stable order."""
        seen: dict[str, None] = {}
        pending = [path]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen[current] = None
            pending.extend(reversed(self.imports.get(current, ())))
        return sorted(seen)


def discover(project: Project, paths: Iterable[Path]) -> list[str]:
    """The `.oneiric` files named by `paths` (directories searched recursively), sorted."""
    found: set[str] = set()
    for path in paths:
        if path.is_dir():
            for file in path.rglob(f"*{SOURCE_SUFFIX}"):
                if file.is_file():
                    found.add(project.relative(file))
        elif path.is_file():
            found.add(project.relative(path))
        else:
            raise ProjectError(f"{path}: no such file or directory")
    return sorted(found)


def load(
    project: Project,
    entries: list[str],
    overlay: Mapping[str, str] | None = None,
    *,
    keep_trees: bool = False,
) -> Sources:
    """The files `entries` and every file they import, each parsed and checked."""
    return Loader(project, overlay, keep_trees=keep_trees).load(entries)


@dataclass(frozen=True, slots=True)
class Broken:
    """A file with syntax errors: what of it parses, checked, and what is skipped."""

    checked: CheckedFile
    diagnostics: list[Diagnostic]
    skipped: Skipped


# A file to parse and check: (path, text, keep its syntax tree)
CheckJob = tuple[str, str, bool]
# Its outcome: (path, the checked file, or what of it parses, or its syntax errors,
#  its syntax tree if kept)
Checked = tuple[str, CheckedFile | Broken | list[Diagnostic], n.Module | None]


class Loader:
    """Reads the files of a build, parses and checks each, and follows their imports.

    `overlay`: text to use instead of a file's (an editor's unsaved buffers), by path.
    `keep_trees` also keeps each parsed file's syntax tree in `Sources.modules`
    (the language server navigates them).
    """

    def __init__(
        self,
        project: Project,
        overlay: Mapping[str, str] | None = None,
        *,
        keep_trees: bool = False,
    ) -> None:
        self.project = project
        self.overlay: Mapping[str, str] = overlay or {}
        self.keep_trees = keep_trees

    def load(self, entries: list[str]) -> Sources:
        sources = Sources()
        attempted: set[str] = set()
        pending = sorted(set(entries))
        while pending:
            attempted.update(pending)
            read = [path for path in pending if self.read(path, sources)]
            self.check_files(read, sources)
            for path in pending:
                checked = sources.checked.get(path)
                if checked is not None:
                    sources.imports[path] = _resolve_imports(
                        self.project, path, checked.imports, sources
                    )
            imported = {target for path in pending for target in sources.imports.get(path, ())}
            pending = sorted(imported - attempted)
        _check_import_cycles(sources)
        return sources

    def read(self, path: str, sources: Sources) -> bool:
        """Whether `path` could be read: its text is then in `sources.files`."""
        return read_source(self.project, path, self.overlay, sources) is not None

    def check_files(self, paths: list[str], sources: Sources) -> None:
        """Parse and check each of `paths` (read already): its checked form (and tree) in
        `sources`, or its syntax errors in `sources.diagnostics`."""
        jobs = [(path, sources.files[path].text, self.keep_trees) for path in paths]
        for path, outcome, module in check_forked(check_source, jobs, [len(j[1]) for j in jobs]):
            record_checked(sources, path, outcome, module)


def record_checked(
    sources: Sources,
    path: str,
    outcome: CheckedFile | Broken | list[Diagnostic],
    module: n.Module | None,
) -> None:
    """What checking a file gave, in `sources` (a broken file is checked as far as it
    parses, and what it skips recorded)."""
    if isinstance(outcome, CheckedFile):
        sources.checked[path] = outcome
    elif isinstance(outcome, Broken):
        sources.checked[path], sources.broken[path] = outcome.checked, outcome.skipped
        sources.diagnostics.extend(outcome.diagnostics)
    else:
        sources.diagnostics.extend(outcome)
        return
    if module is not None:
        sources.modules[path] = module


def read_source(
    project: Project, path: str, overlay: Mapping[str, str], sources: Sources
) -> bytes | None:
    """A file's bytes, its text and digest recorded in `sources`; None (reported) when
    it cannot be read or decoded."""
    try:
        text = overlay.get(path)
        data = (project.root / path).read_bytes() if text is None else text.encode("utf-8")
    except OSError as exc:
        sources.diagnostics.append(
            Diagnostic("E0004", f"cannot read file: {exc.strerror or exc}", path)
        )
        return None
    try:
        text = decode_source(path, data)
    except CompileError as err:
        sources.diagnostics.extend(err.diagnostics)
        return None
    sources.files[path] = SourceFile(path, text, hashlib.sha256(data).hexdigest())
    return data


def check_source(job: CheckJob, pickled: bool = False) -> Checked:
    """Parse and check one file (`pickled`: `forking.map_forked`'s flag, unused)."""
    path, text, keep_tree = job
    try:
        module = parse(path, text)
    except SyntaxErrors as err:
        if err.partial is None:
            return path, err.diagnostics, None
        broken = Broken(check_file(err.partial), err.diagnostics, err.skipped)
        return path, broken, err.partial if keep_tree else None
    return path, check_file(module), module if keep_tree else None


def check_forked(
    call: Callable[[_Job, bool], _Outcome], jobs: list[_Job], weights: Sequence[int]
) -> list[_Outcome]:
    """Each job's outcome, in the order of `jobs`, on every core when worth it
    (`weights`: each job's text length)."""
    if len(jobs) > 1:
        parser()  # build the tables once; forked children inherit them
    return map_forked(call, jobs, weights)


def _resolve_imports(
    project: Project, path: str, imports: tuple[n.Import, ...], sources: Sources
) -> tuple[str, ...]:
    resolved: list[str] = []
    base = posixpath.dirname(path)
    for imp in imports:
        target = posixpath.normpath(posixpath.join(base, imp.path))
        if target.startswith("../") or target == ".." or posixpath.isabs(imp.path):
            sources.diagnostics.append(
                Diagnostic(
                    "E0204",
                    f'import "{imp.path}" points outside the project root',
                    path,
                    imp.pos,
                    help="imports are relative to the importing file and stay inside the project",
                )
            )
            continue
        try:
            found = (project.root / target).is_file()
        except OSError:  # e.g. a name too long for the file system
            found = False
        if not found:
            sources.diagnostics.append(
                Diagnostic(
                    "E0204",
                    f'imported file "{imp.path}" does not exist',
                    path,
                    imp.pos,
                    help=_similar_import(project, path, imp.path),
                )
            )
            continue
        resolved.append(target)
    return tuple(resolved)


def _similar_import(project: Project, importer: str, wanted: str) -> str | None:
    """ "did you mean" for a missing import: a file beside the wanted one with a close name.

    Names are compared without the shared suffix (which would make every file look
    alike), and the importing file itself is never suggested.
    """
    directory = posixpath.normpath(
        posixpath.join(posixpath.dirname(importer), posixpath.dirname(wanted))
    )
    try:
        stems = {
            p.stem: p.name
            for p in (project.root / directory).glob(f"*{SOURCE_SUFFIX}")
            if p.is_file() and posixpath.normpath(posixpath.join(directory, p.name)) != importer
        }
    except OSError:  # e.g. a directory name too long for the file system
        return None
    close = difflib.get_close_matches(
        posixpath.basename(wanted).removesuffix(SOURCE_SUFFIX), sorted(stems), n=1, cutoff=0.6
    )
    if not close:
        return None
    return f'did you mean "{posixpath.join(posixpath.dirname(wanted), stems[close[0]])}"?'


def _check_import_cycles(sources: Sources) -> None:
    """Report each import cycle once, at the import that closes it."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []
    for root in sorted(sources.checked):
        if root in state:
            continue
        # Iterative DFS: (file, index of the next import to follow).
        frames: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        stack.append(root)
        while frames:
            path, index = frames[-1]
            targets = sources.imports.get(path, ())
            if index == len(targets):
                frames.pop()
                stack.pop()
                state[path] = 2
                continue
            frames[-1] = (path, index + 1)
            target = targets[index]
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                imp = _import_statement(path, sources.checked[path].imports, target)
                sources.diagnostics.append(
                    Diagnostic(
                        "E0205",
                        "import cycle: " + " → ".join(cycle),
                        path,
                        imp.pos if imp else None,
                        help="move what both files need into a third file that each imports",
                    )
                )
            elif target not in state and target in sources.checked:
                state[target] = 1
                stack.append(target)
                frames.append((target, 0))


def _import_statement(path: str, imports: tuple[n.Import, ...], target: str) -> n.Import | None:
    base = posixpath.dirname(path)
    for imp in imports:
        if posixpath.normpath(posixpath.join(base, imp.path)) == target:
            return imp
    return None
