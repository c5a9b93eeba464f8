"""Pure core: decisions over h11 events; imports no trio."""
