"""Find, read and parse the source files of a build, following imports.

Input: the project and the paths named on the command line (files or
directories).  Output: a `Sources` with every file's text and digest, each
file checked on its own (`checker.check_file`), the resolved import graph and
the diagnostics met on the way.  Files are parsed and checked in parallel when
there is enough text to pay for it, and through the cache when one is given:
a cached file is neither parsed nor checked again.
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oneiricc._language import nodes as n
from oneiricc._incremental.cache import (
    CHECKSUM_SIZE,
    CheckCache,
    dump_entry,
    load_entry,
    write_entry,
)
from oneiricc._build.checker import CheckedFile, check_file
from oneiricc._language.diagnostics import CompileError, Diagnostic
from oneiricc._build.forking import map_forked
from oneiricc._language.parser import SyntaxErrors, decode_source, parse, parser
from oneiricc._language.recovery import Skipped
from oneiricc._build.project import Project, ProjectError

SOURCE_SUFFIX = ".oneiric"


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
    # The cache entry checksum of each checked file that has an entry (a build memo's key).
    checksums: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, Path] = field(default_factory=dict)  # each file's cache entry

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
    cache: CheckCache | None = None,
    overlay: Mapping[str, str] | None = None,
    *,
    keep_trees: bool = False,
    read: Sources | None = None,
) -> Sources:
    """`overlay`: text to use instead of a file's (an editor's unsaved buffers), by path.

    `keep_trees` also keeps each parsed file's syntax tree in `Sources.modules`
    (the language server navigates them); a file served by the cache has none.
    `read`: files this build has read already (`read_checksums`), not read again.
    """
    sources = Sources()
    attempted: set[str] = set()
    pending = sorted(set(entries))
    while pending:
        attempted.update(pending)
        _read_and_parse(project, pending, sources, cache, overlay or {}, keep_trees, read)
        imported = {target for path in pending for target in sources.imports.get(path, ())}
        pending = sorted(imported - attempted)
    _check_import_cycles(sources)
    return sources


@dataclass(frozen=True, slots=True)
class _Broken:
    """A file with syntax errors: what of it parses, checked, and what is skipped."""

    checked: CheckedFile
    diagnostics: list[Diagnostic]
    skipped: Skipped


# (path, text, cache entry to write or None, keep the syntax tree)
_Job = tuple[str, str, Path | None, bool]
# (path, checked file or its cache entry's bytes or the syntax errors, syntax tree,
#  the checksum of the entry written)
_Outcome = tuple[
    str, CheckedFile | bytes | _Broken | list[Diagnostic], n.Module | None, bytes | None
]


def _read(
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


def _read_and_parse(
    project: Project,
    paths: list[str],
    sources: Sources,
    cache: CheckCache | None,
    overlay: Mapping[str, str],
    keep_trees: bool,
    read: Sources | None,
) -> None:
    jobs: list[_Job] = []
    for path in paths:
        entry = None
        if read is not None and path in read.entries:  # (a build with the cache, no overlay)
            sources.files[path], entry = read.files[path], read.entries[path]
        else:
            data = _read(project, path, overlay, sources)
            if data is None:
                continue
            if cache is not None and not keep_trees:
                entry = cache.entry(path, data)
        if entry is not None and cache is not None:
            sources.entries[path] = entry
            found = cache.load(entry)
            if found is not None:
                sources.checked[path], sources.checksums[path] = found
                continue
        jobs.append((path, sources.files[path].text, entry, keep_trees))

    for job, (path, outcome, module, checksum) in zip(jobs, _parse_all(jobs), strict=True):
        entry = job[2]
        if isinstance(outcome, bytes):
            loaded = load_entry(outcome, CheckedFile)
            assert loaded is not None, path  # bytes this build's own child just pickled
            outcome = loaded
        if isinstance(outcome, CheckedFile):
            sources.checked[path] = outcome
            if module is not None:
                sources.modules[path] = module
            if checksum is not None:
                sources.checksums[path] = checksum
                if cache is not None and entry is not None:
                    cache.keep(entry, outcome, checksum)
        elif isinstance(outcome, _Broken):  # never cached: it is parsed again until fixed
            sources.checked[path], sources.broken[path] = outcome.checked, outcome.skipped
            sources.diagnostics.extend(outcome.diagnostics)
            if module is not None:
                sources.modules[path] = module
        else:
            sources.diagnostics.extend(outcome)

    for path in paths:
        checked = sources.checked.get(path)
        if checked is not None:
            sources.imports[path] = _resolve_imports(project, path, checked.imports, sources)


def read_checksums(project: Project, paths: list[str], cache: CheckCache) -> Sources | None:
    """Each file's text and its checked form's entry checksum, without loading any entry.

    Only a file without an entry (an edited one) is parsed and checked, its entry
    written on the way, so a build that goes on to `load` finds it.  None when a
    file cannot be read, decoded, parsed or cached (the build that reports why is
    `load`'s).
    """
    sources = Sources()
    jobs: list[_Job] = []
    for path in paths:
        data = _read(project, path, {}, sources)
        if data is None:
            return None
        entry = sources.entries[path] = cache.entry(path, data)
        checksum = cache.checksum(entry)
        if checksum is None:
            jobs.append((path, sources.files[path].text, entry, False))
        else:
            sources.checksums[path] = checksum
    for job, (path, outcome, _, checksum) in zip(jobs, _parse_all(jobs), strict=True):
        written = job[2]
        if checksum is None or written is None:
            return None
        sources.checksums[path] = checksum
        if isinstance(outcome, CheckedFile):
            cache.keep(written, outcome, checksum)
    return sources


def _parse_one(job: _Job, blob_back: bool = False) -> _Outcome:
    """Parse and check one file, and write its cache entry when one is wanted.

    `blob_back` (in a forked child): return a cached file as its entry's bytes,
    pickled already for the cache, rather than pickle it again to send it back.
    """
    path, text, entry, keep_tree = job
    try:
        module = parse(path, text)
    except SyntaxErrors as err:
        if err.partial is None:
            return path, err.diagnostics, None, None
        broken = _Broken(check_file(err.partial), err.diagnostics, err.skipped)
        return path, broken, err.partial if keep_tree else None, None
    checked = check_file(module)
    tree = module if keep_tree else None
    if entry is None:
        return path, checked, tree, None
    try:
        blob = dump_entry(checked)
    except RecursionError:  # too deep to pickle: built but not cached
        if blob_back:
            raise  # nor can it be sent back: the parent parses it again
        return path, checked, tree, None
    write_entry(entry, blob)
    return path, blob if blob_back else checked, tree, blob[:CHECKSUM_SIZE]


def _parse_all(jobs: list[_Job]) -> list[_Outcome]:
    """Each job's outcome, in the order of `jobs`, parsed on every core when worth it."""
    if len(jobs) > 1:
        parser()  # build the tables once; forked children inherit them
    return map_forked(_parse_one, jobs, [len(job[1]) for job in jobs])


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
