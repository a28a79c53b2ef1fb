"""Lost & Found image workbook helpers."""
__version__ = "0.1.0"
