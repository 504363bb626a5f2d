"""What the verbs write and print; it computes nothing.

- :mod:`.text`: every fixed-width text table the CLI prints (``format_*``) and the rows the report shares;
- :mod:`.report`: ``report.json`` and ``report.md`` of an evaluation;
- :mod:`.figures`: PNG masks, overlays, confusion heatmaps, the budget curve's plot;
- :mod:`.submission`: the Kaggle submission CSV, written streaming and read back.
"""
