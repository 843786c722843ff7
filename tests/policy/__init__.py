"""Policy engine golden cases and shared builders."""
