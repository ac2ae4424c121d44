"""Figures a section opens with, each beside the table it is drawn from (a topic renders them;
they import no topic)."""
