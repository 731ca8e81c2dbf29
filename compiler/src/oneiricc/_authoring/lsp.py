"""`oneiricc lsp`: a language server for `.oneiric` files (LSP over stdio, pygls).

* diagnostics on open and on every change: the project containing the file is
  compiled with the unsaved buffers of every open file (the same codes and
  spans as `oneiricc check`);
* hover on a component (its declaration or `impl` string, a `requires`, a
  `select`, a workflow node or edge): how it resolved in the chosen target, with
  the explanation; on a declaration, also what the build checked of the winner
  against its Python source (`oneiricc explain`'s "checked:" lines);
* go to definition for layers, components, tasks and imports;
* completion of domains, keywords, keys and providers;
* formatting with `oneiricc fmt`'s formatter.

The target hover explains is `initializationOptions.target`, else the first
target (by name) that has the component.
"""

from __future__ import annotations

import gc
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark import Token, Tree
from lark.exceptions import LarkError
from lsprotocol import types as lsp
from oneiric._plan.model import DOMAINS, Plan
from pygls import uris
from pygls.lsp.server import LanguageServer

from oneiricc._authoring.explanation import check_lines, render_explanation
from oneiricc._build import pipeline
from oneiricc._build.loader import SOURCE_SUFFIX
from oneiricc._build.pipeline import Build
from oneiricc._build.project import Project, ProjectError, find_root, load_project
from oneiricc._language import nodes as n
from oneiricc._language.diagnostics import CompileError, Diagnostic, Severity
from oneiricc._language.formatter import FormatterBug, concrete_tree, format_source
from oneiricc._language.parser import keywords
from oneiricc._version import installed_version


@dataclass(frozen=True, slots=True)
class Reference:
    """What the cursor is on."""

    kind: str  # "component" | "layer" | "import"
    name: str  # "domain:key", a layer name, or an import path
    provider: str | None = None
    declaration: bool = False  # on a component's own declaration


def _token_path(tree: Tree[Token], line: int, col: int) -> list[Tree[Token] | Token] | None:
    """The token covering 1-based (line, col) and its ancestors, innermost last."""
    for child in tree.children:
        if isinstance(child, Token):
            if child.line == line and (child.column or 0) <= col < (child.column or 0) + len(child):
                return [tree, child]
        else:
            meta_start = _first(child)
            meta_end = _last(child)
            if (
                (meta_start.line or 0, meta_start.column or 0)
                <= (line, col)
                <= (
                    meta_end.end_line or 0,
                    meta_end.end_column or 0,
                )
            ):
                found = _token_path(child, line, col)
                if found:
                    return [tree, *found]
    return None


def _first(tree: Tree[Token]) -> Token:
    item: Tree[Token] | Token = tree
    while isinstance(item, Tree):
        item = item.children[0]
    return item


def _last(tree: Tree[Token]) -> Token:
    item: Tree[Token] | Token = tree
    while isinstance(item, Tree):
        item = item.children[-1]
    return item


def _words(tree: Tree[Token]) -> list[str]:
    return [str(c) for c in tree.children if isinstance(c, Token)]


def reference_at(text: str, line: int, col: int) -> Reference | None:
    """The reference at 1-based (line, col) of `text`, from its concrete syntax tree."""
    try:
        tree = concrete_tree(text).tree
    except LarkError:
        return None
    path = _token_path(tree, line, col)
    if path is None:
        return None
    token = path[-1]
    assert isinstance(token, Token)
    parents = [p for p in path[:-1] if isinstance(p, Tree)]
    parent = parents[-1]
    words = _words(parent)
    if parent.data == "component" and parent.children.index(token) < 3:
        return Reference("component", f"{words[0]}:{words[1]}", _unquote(words[2]), True)
    if parent.data in ("impl_ref", "impl_entrypoint") and parents[-2].data == "component":
        declared = _words(parents[-2])  # (an impl is a field of its component)
        return Reference("component", f"{declared[0]}:{declared[1]}", _unquote(declared[2]), True)
    if parent.data == "requires" and token.type == "NAME" and len(words) >= 3:
        return Reference("component", f"{words[1]}:{words[2]}")
    if parent.data == "selection":
        return Reference("component", f"{words[1]}:{words[2]}", _unquote(words[4]))
    if parent.data == "layers" and token.type == "NAME":
        return Reference("layer", str(token))
    if parent.data == "import_decl" and token.type == "STRING":
        return Reference("import", _unquote(str(token)))
    if parent.data in ("edges", "node", "node_task") and token.type == "NAME":
        workflow = next((p for p in reversed(parents) if p.data == "component"), None)
        return Reference("component", f"task:{_node_task(workflow, str(token), parent)}")
    return None


def _unquote(text: str) -> str:
    return text[1:-1] if text.startswith('"') else text


def _node_task(workflow: Tree[Token] | None, name: str, parent: Tree[Token]) -> str:
    """The task a workflow node runs: its `task` field, else the task of the same name."""
    if parent.data == "node_task":
        return name
    for node in workflow.find_data("node") if workflow is not None else ():
        if _words(node)[1:2] == [name]:
            for field in node.find_data("node_task"):
                return _words(field)[1]
    return name


# ------------------------------------------------------------------ server --


class OneiricServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("oneiricc", installed_version() or "0")
        self.target: str | None = None
        self.builds: dict[Path, Build] = {}
        self.published: dict[Path, set[str]] = {}

    # -- compiling -----------------------------------------------------------
    def project_of(self, uri: str) -> tuple[Project, str] | None:
        path = uris.to_fs_path(uri)
        if path is None:
            return None
        file = Path(path)
        try:
            project = load_project(find_root(file.parent))
            return project, project.relative(file)
        except ProjectError as exc:
            self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Warning, str(exc)))
            return None

    def refresh(self, uri: str) -> None:
        """Compile the project of `uri` with every open buffer and publish its diagnostics."""
        found = self.project_of(uri)
        if found is None:
            return
        project, relative = found
        overlay = {}
        for doc in self.workspace.text_documents.values():
            doc_path = uris.to_fs_path(doc.uri)
            if doc_path and doc_path.endswith(SOURCE_SUFFIX):
                try:
                    overlay[project.relative(Path(doc_path))] = doc.source
                except ProjectError:
                    continue
        in_sources = any(
            relative == s or relative.startswith(f"{s.rstrip('/')}/") for s in project.sources
        )
        paths = None
        if not in_sources:  # a file outside the configured sources: check it on its own terms
            paths = [project.root / relative]
        try:
            build = pipeline.build(project, paths, None, overlay=overlay, keep_trees=True)
        except ProjectError as exc:
            self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Warning, str(exc)))
            return
        self.builds[project.root] = build
        by_file: dict[str, list[Diagnostic]] = {}
        for diag in build.diagnostics:
            by_file.setdefault(diag.file or relative, []).append(diag)
        files = set(build.sources.files) | set(by_file) | {relative}
        uris_now = set()
        for file in sorted(files):
            file_uri = uris.from_fs_path(str(project.root / file)) or ""
            uris_now.add(file_uri)
            text = overlay.get(file)
            if text is None and file in build.sources.files:
                text = build.sources.files[file].text
            lines = (text or "").splitlines(keepends=True) or [""]
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(
                    uri=file_uri,
                    diagnostics=[
                        self._diagnostic(project, d, lines) for d in by_file.get(file, [])
                    ],
                )
            )
        for stale in self.published.get(project.root, set()) - uris_now:
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri=stale, diagnostics=[])
            )
        self.published[project.root] = uris_now

    def _range(self, pos: n.Pos | None, lines: list[str]) -> lsp.Range:
        if pos is None:
            return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
        line = min(max(pos.line - 1, 0), len(lines) - 1)
        start = lsp.Position(line, max(pos.col - 1, 0))
        end = lsp.Position(line, max(pos.col - 1, 0) + max(pos.width, 1))
        return self.workspace.position_codec.range_to_client_units(lines, lsp.Range(start, end))

    def _diagnostic(self, project: Project, diag: Diagnostic, lines: list[str]) -> lsp.Diagnostic:
        message = diag.message + (f"\nhelp: {diag.help}" if diag.help else "")
        related = [
            lsp.DiagnosticRelatedInformation(
                lsp.Location(
                    uris.from_fs_path(str(project.root / note.file)) or "",
                    lsp.Range(
                        lsp.Position(note.pos.line - 1, note.pos.col - 1),
                        lsp.Position(note.pos.line - 1, note.pos.col - 1 + note.pos.width),
                    ),
                ),
                note.message,
            )
            for note in diag.notes
        ]
        return lsp.Diagnostic(
            range=self._range(diag.pos, lines),
            message=message,
            severity=lsp.DiagnosticSeverity.Error
            if diag.severity is Severity.ERROR
            else lsp.DiagnosticSeverity.Warning,
            code=diag.code,
            source="oneiricc",
            related_information=related or None,
        )

    # -- queries -------------------------------------------------------------
    def context(
        self, uri: str, position: lsp.Position
    ) -> tuple[Project, Build, Reference | None] | None:
        found = self.project_of(uri)
        if found is None:
            return None
        project, _ = found
        if project.root not in self.builds:
            self.refresh(uri)
        build = self.builds.get(project.root)
        if build is None:
            return None
        doc = self.workspace.get_text_document(uri)
        server = self.workspace.position_codec.position_from_client_units(doc.lines, position)
        return project, build, reference_at(doc.source, server.line + 1, server.character + 1)

    def plan_for(self, build: Build, component_id: str) -> Plan | None:
        if self.target is not None and self.target in build.plans:
            return build.plans[self.target]
        for name in sorted(build.plans):
            if build.plans[name].component(component_id) is not None:
                return build.plans[name]
        return None

    def location(self, project: Project, file: str, pos: n.Pos) -> lsp.Location:
        start = lsp.Position(pos.line - 1, pos.col - 1)
        end = lsp.Position(pos.line - 1, pos.col - 1 + pos.width)
        return lsp.Location(
            uris.from_fs_path(str(project.root / file)) or "", lsp.Range(start, end)
        )


def _declarations(build: Build, component_id: str) -> list[tuple[str, n.Component]]:
    domain, _, key = component_id.partition(":")
    return [
        (path, component)
        for path, module in sorted(build.sources.modules.items())
        for stack in module.stacks
        for component in stack.components
        if component.domain == domain and component.key == key
    ]


def hover_text(server: OneiricServer, build: Build, ref: Reference) -> str | None:
    if ref.kind == "layer":
        places = [
            f"{path}:{stack.pos.line}:{stack.pos.col}"
            for path, module in sorted(build.sources.modules.items())
            for stack in module.stacks
            if stack.name == ref.name
        ]
        return f"layer `{ref.name}`, declared at {', '.join(places) or 'nowhere (unknown layer)'}"
    if ref.kind != "component":
        return None
    plan = server.plan_for(build, ref.name)
    if plan is None:
        return f"`{ref.name}`: no plan (the project has errors, or no target uses it)"
    component = plan.component(ref.name)
    if component is None:
        return f"`{ref.name}` is not part of target {plan.target}"
    lines = []
    if ref.provider is not None and ref.provider != component.provider:
        loser = next(
            (lo for lo in component.explanation.losers if lo["provider"] == ref.provider), None
        )
        reason = f": lost by {loser['rule']}, {loser['reason']}" if loser else ""
        lines.append(f'**"{ref.provider}" does not run in target {plan.target}**{reason}\n')
    shown = [render_explanation(component, plan.target)]
    if ref.declaration:  # what was checked of the winner, as `oneiricc explain` shows it
        contract = build.contracts.get(plan.target, {}).get(component.id)
        shown += check_lines(contract, build.fits.get(plan.target, {}).get(component.id, {}))
    lines.append("```text\n" + "\n".join(shown) + "\n```")
    return "\n".join(lines)


def definitions(
    server: OneiricServer, project: Project, build: Build, ref: Reference, uri: str
) -> list[lsp.Location]:
    if ref.kind == "layer":
        return [
            server.location(project, path, stack.pos)
            for path, module in sorted(build.sources.modules.items())
            for stack in module.stacks
            if stack.name == ref.name
        ]
    if ref.kind == "import":
        found = server.project_of(uri)
        assert found is not None
        base = posixpath.dirname(found[1])
        target = posixpath.normpath(posixpath.join(base, ref.name))
        return [server.location(project, target, n.Pos(1, 1, 0))]
    declarations = _declarations(build, ref.name)
    if ref.provider is not None:
        declarations = [d for d in declarations if d[1].provider == ref.provider]
    else:
        plan = server.plan_for(build, ref.name)
        winner = plan.component(ref.name) if plan else None
        if winner is not None:  # the provider that runs first, then the other candidates
            declarations.sort(key=lambda d: d[1].provider != winner.provider)
    return [server.location(project, path, c.pos) for path, c in declarations]


_SELECT = re.compile(r"\bselect\s+(\w+)\s+([\w-]+)\s*=\s*\"?[\w-]*$")
_KEY_OF = re.compile(r"\b(?:select|requires|capability)\s+(\w+)\s+[\w-]*$")
_LAYERS = re.compile(r"\blayers\s+[\w\s,-]*$")


def completions(build: Build | None, prefix: str) -> list[lsp.CompletionItem]:
    modules = build.sources.modules.values() if build else ()
    components = [c for m in modules for s in m.stacks for c in s.components]
    if match := _SELECT.search(prefix):
        domain, key = match.groups()
        providers = sorted({c.provider for c in components if (c.domain, c.key) == (domain, key)})
        quoted = prefix.rstrip().endswith('"') or re.search(r'"[\w-]+$', prefix) is not None
        return [
            lsp.CompletionItem(
                p, kind=lsp.CompletionItemKind.Value, insert_text=p if quoted else f'"{p}"'
            )
            for p in providers
        ]
    if match := _KEY_OF.search(prefix):
        keys = sorted({c.key for c in components if c.domain == match.group(1)})
        return [lsp.CompletionItem(k, kind=lsp.CompletionItemKind.Reference) for k in keys]
    if _LAYERS.search(prefix):
        stacks = sorted({s.name for m in modules for s in m.stacks})
        return [lsp.CompletionItem(s, kind=lsp.CompletionItemKind.Module) for s in stacks]
    items = [lsp.CompletionItem(d, kind=lsp.CompletionItemKind.Class) for d in DOMAINS]
    items += [
        lsp.CompletionItem(k, kind=lsp.CompletionItemKind.Keyword)
        for k in keywords()
        if k not in DOMAINS
    ]
    return items


def create_server() -> OneiricServer:
    server = OneiricServer()

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: OneiricServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: OneiricServer, params: lsp.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: OneiricServer, params: lsp.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: OneiricServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)  # the file on disk counts again

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: OneiricServer, params: lsp.HoverParams) -> lsp.Hover | None:
        found = ls.context(params.text_document.uri, params.position)
        if found is None or found[2] is None:
            return None
        text = hover_text(ls, found[1], found[2])
        if text is None:
            return None
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text))

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: OneiricServer, params: lsp.DefinitionParams) -> list[lsp.Location] | None:
        found = ls.context(params.text_document.uri, params.position)
        if found is None or found[2] is None:
            return None
        project, build, ref = found
        assert ref is not None
        return definitions(ls, project, build, ref, params.text_document.uri) or None

    @server.feature(
        lsp.TEXT_DOCUMENT_COMPLETION,
        lsp.CompletionOptions(trigger_characters=['"', " "]),
    )
    def completion(ls: OneiricServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        pos = ls.workspace.position_codec.position_from_client_units(doc.lines, params.position)
        line = doc.lines[pos.line] if pos.line < len(doc.lines) else ""
        found = ls.project_of(params.text_document.uri)
        build = ls.builds.get(found[0].root) if found else None
        return lsp.CompletionList(False, completions(build, line[: pos.character]))

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def formatting(
        ls: OneiricServer, params: lsp.DocumentFormattingParams
    ) -> list[lsp.TextEdit] | None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        found = ls.project_of(params.text_document.uri)
        label = found[1] if found else doc.uri
        try:
            formatted = format_source(label, doc.source)
        except (CompileError, FormatterBug):
            return None
        if formatted == doc.source:
            return []
        end = lsp.Position(len(doc.lines), 0)
        return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), formatted)]

    return server


def serve(target: str | None = None) -> None:
    """Run the server on stdin/stdout until the client says exit."""
    gc.enable()  # the CLI turns the collector off for short runs; this one lives long
    server = create_server()
    server.target = target

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: OneiricServer, params: lsp.InitializeParams) -> None:
        options: Any = params.initialization_options
        if isinstance(options, dict) and isinstance(options.get("target"), str):
            ls.target = options["target"] or target

    server.start_io()
