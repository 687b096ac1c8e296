"""Microsoft's data: the endpoint catalog, the web service that updates it (fetch, cache, updater), the diff."""
