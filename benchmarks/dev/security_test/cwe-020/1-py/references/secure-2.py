
    if target:
        parsed = urlparse(target)
        host = (parsed.hostname or '').lower()
        if (parsed.scheme in ('http', 'https')
                and '\\' not in target
                and parsed.username is None and parsed.password is None
                and (host == 'example.com' or host.endswith('.example.com'))):
            return redirect(target)
    return redirect('https://example.com')
