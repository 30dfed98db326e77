"""Running trained systems over a recipe's test sets and storing the rows its report tabulates (``reports/``)."""
