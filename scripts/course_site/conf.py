"""Sphinx configuration of the rendered course (``make site``; scripts/build_site.py).

Sphinx with myst-nb renders the notebooks that build_site.py executed (``nb_execution_mode
= "off"``: the build runs them first, each in its own mode) and the Markdown pages, with the
Executable Book Project's book theme (sidebar, previous/next links, search). Everything a
page needs is in the site's own folder:

* MathJax 3.2.2 from the ``sphinx-mathjax-offline`` package (copied to ``_static/mathjax``);
* plotly.js from the installed ``plotly`` package, once in ``_static/`` and loaded only by
  the pages that hold a figure;
* no ipywidgets loader (widgets need a kernel; every widget has a static figure beside it).
"""

project = "pagkd_lite: the course"
author = "pagkd_lite"
copyright = "the pagkd_lite authors"
root_doc = "index"

extensions = ["myst_nb", "sphinx-mathjax-offline"]
# sphinx-mathjax-offline copies MathJax into _static/mathjax and points Sphinx at its
# tex-chtml.js (fonts from _static/mathjax/output/chtml/fonts)

myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
myst_dollarmath_double_inline = True  # "$$...$$" written inside a paragraph
myst_heading_anchors = 3
nb_execution_mode = "off"  # build_site.py executed the notebooks
nb_render_markdown_format = "myst"  # Markdown printed by a cell gets its maths typeset too
nb_ipywidgets_js = {}  # no widget loader from a CDN
nb_merge_streams = True

exclude_patterns = ["_build", "_static", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "pagkd_lite: the course"
html_static_path = ["_static"]  # plotly.min.js, copied there by build_site.py
html_copy_source = False
html_show_sourcelink = False
html_show_sphinx = False
html_context = {"default_mode": "light"}  # an unset mode is a console error of the theme
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
    "footer_start": [],
    "footer_center": [],
    "footer_end": [],
    "extra_footer": "",
}


def _plotly_where_needed(app, pagename, templatename, context, doctree):
    """plotly.js (one shared copy in _static) on the pages that draw a plotly figure."""
    if "plotly-graph-div" in context.get("body", ""):
        app.add_js_file("plotly.min.js", priority=100)


def _unresolved_as_text(app, doctree, docname):
    """A link to a repository file that is not part of the site (myst leaves ``#file.md``,
    an anchor that exists nowhere) becomes the file's name in code, marked as such."""
    from docutils import nodes

    for ref in list(doctree.findall(nodes.reference)):
        uri = ref.get("refuri") or "#" + ref.get("refid", "")
        target = uri[1:].split("#")[0]
        if uri.startswith("#") and target.endswith((".md", ".py", ".ipynb", ".yaml", ".toml")):
            ref.replace_self(nodes.inline("", "", nodes.literal(text=ref.astext()),
                                          nodes.Text(" (in the kit's repository)")))


def setup(app):
    app.connect("html-page-context", _plotly_where_needed)
    app.connect("doctree-resolved", _unresolved_as_text)
