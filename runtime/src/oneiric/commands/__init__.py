"""One module per group of `oneiric` commands; registered in `oneiric.cli.COMMANDS`."""
