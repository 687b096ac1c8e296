"""The IT dashboard served by ``netcheck serve`` under ``/ui/`` (``views.mount``)."""
