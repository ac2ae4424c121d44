"""The report's topics, one module each: its table(s) with their columns, its figure(s) and
its section (``ID``, ``TITLE``, ``section(ctx)``). reports/html.py lists them in page order."""
