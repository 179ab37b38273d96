"""CLI sub-commands, one module each (see deformact.cli.COMMANDS)."""
