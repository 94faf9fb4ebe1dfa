
    env = Environment(loader=loader, autoescape=select_autoescape(['html', 'xml']))
