"""imss-milter: an email security gateway that plugs into Postfix or Sendmail as a milter."""

__version__ = "0.1.0"
