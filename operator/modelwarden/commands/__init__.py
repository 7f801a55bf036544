"""The `modelwarden` subcommands: one module per subcommand, named after it (``api-docs`` is
``api_docs``), listed in :data:`modelwarden.cli.COMMANDS`.

Each module is argument handling only: ``configure(parser)`` adds the subcommand's arguments,
``run(args) -> int`` turns them into calls into the layer that does the work (controller, api,
prometheus, serving, sandbox) and returns the exit status, with at most small private helpers
that format the command's output. Nothing outside this package and modelwarden.cli imports it.
"""
