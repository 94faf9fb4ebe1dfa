
    return flask.render_template_string(
        "<p>Hello, {{ name }}! <a href=\"/profile?user={{ name|urlencode }}\" title=\"{{ name }}\">profile</a></p>",
        name=username or "stranger",
    )
