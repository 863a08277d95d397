"""Reporting: forgetting and task tables (csv/md/tex) and the forgetting/task trade-off figure."""
