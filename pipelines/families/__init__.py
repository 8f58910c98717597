"""One module per diffusers pipeline family; ``registry`` is the one place a family is looked up."""
