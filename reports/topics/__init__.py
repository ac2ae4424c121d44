"""The report's topics, one module each: its section (``ID``, ``TITLE``, ``section(ctx)``),
drawn from the shared tables of the ``Context`` (reports/tables/) and the tables and figures
only it shows. No topic imports another; reports/html.py lists them in page order."""
