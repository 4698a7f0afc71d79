"""What notebooks import inside a user's kernel: search status and plots (``helpers``), bands and
masks (``bands``), time-series statistics (``stats``) and openEO processing (``openeo_local``)."""
