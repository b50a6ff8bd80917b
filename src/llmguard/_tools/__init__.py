"""Tools: ``@tool``, ``Toolbox`` (the allowlist) and the tool loop behind ``guard.run_tools``."""
