"""Click commands, one module per command family, imported only when run.

``netcheck.cli`` maps each command name to ``module:attribute`` here, so that
``netcheck --help`` does not import httpx, dnspython or the collector.
"""
