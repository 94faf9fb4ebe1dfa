
    env = Environment(loader=loader)
