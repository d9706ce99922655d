"""The plugins bundled with chatwright.

Each subpackage is an entry point of group ``chatwright`` in chatwright's own
distribution, written against the public API only, exactly as a third-party
plugin would be. Each can be blocked by name with ``CHATWRIGHT_DISABLE_PLUGINS``.
"""
