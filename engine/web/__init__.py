"""Static assets of the wallboard and agent desktop pages (HTML, CSS, vanilla JS modules)."""
