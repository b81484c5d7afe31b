"""Report formats. Each turns the one report document into text."""
