
    response = make_response('<html><body><h1>Profile</h1><img alt="%s" src="/avatar/%s"></body></html>'
                             % (username, escape(username)))
    return response
