
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=('xml',), default_for_string=True),
    )
