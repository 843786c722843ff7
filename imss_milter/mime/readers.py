"""Third-party readers of Office, PDF and 7z files, loaded together on first use.

Importing olevba costs most of a second, so the MIME layer imports this
module only when an OLE2, PDF or 7z file arrives. The daemon imports every
module of the package before it drops privileges, which loads these (and
the submodules they would otherwise load lazily) while their files are readable.
"""

import warnings

import olefile
import msoffcrypto
import msoffcrypto.format.doc97
import msoffcrypto.format.ooxml
import msoffcrypto.format.ppt97
import msoffcrypto.format.xls97
import py7zr
import py7zr.io
import pypdf

with warnings.catch_warnings():
    # olevba builds its pyparsing grammar with names pyparsing 3 deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    from oletools import olevba, ppt_parser

__all__ = ["olefile", "msoffcrypto", "olevba", "ppt_parser", "py7zr", "pypdf"]
