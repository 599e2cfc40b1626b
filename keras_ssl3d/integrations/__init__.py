"""Adapters for other libraries' loaders (each imported only when that library is installed)."""
