// Starts `oneiricc lsp` (stdio) for .oneiric files.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const settings = vscode.workspace.getConfiguration("oneiric");
  const [command, ...args] = settings.get("server.command");
  const target = settings.get("target");
  client = new LanguageClient(
    "oneiric",
    "Oneiric",
    { command, args },
    {
      documentSelector: [{ scheme: "file", language: "oneiric" }],
      initializationOptions: target ? { target } : {},
    },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
