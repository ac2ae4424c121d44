"""The HTML report: records (JSON Lines) -> pandas tables -> seaborn figures -> one HTML file.

``build_report(results_dirs, out_html)`` writes a self-contained report (figures embedded,
no external assets) and its tables as CSV files beside it; ``load_records(dirs)`` returns
the records as a DataFrame and the problems met reading them; ``build_frame_report(frame,
out_html)`` writes the report of such a frame.
"""

from reports.html import build_frame_report, build_report
from reports.load import load_records

__all__ = ["build_frame_report", "build_report", "load_records"]
