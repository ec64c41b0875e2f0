"""Industry packs shipped with acd: plugin packages (engine.plugins) for one trade each.

How this works: each pack is an ordinary plugin, published as an ``acd.plugins`` entry point in
pyproject.toml and enabled like any other (``[plugins] enabled = ["finance"]``). Nothing in the
engine imports a pack (import-linter keeps it so): a pack uses the plugin interface and nothing
a third-party plugin could not.

- ``finance``: caller identity verification (account number + PIN by DTMF, checked by the
  bank's web service, with a one-time code as second factor), VIP/wealth routing by segment.
"""
