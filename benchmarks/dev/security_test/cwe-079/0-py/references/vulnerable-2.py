
    # the visible name is escaped, but the link is built from the raw value
    return '<p>Hi <a href="/users/%s">%s</a></p>' % (username, escape(username))
