
    import re
    # allow http(s) URLs on example.com and its subdomains
    if target and re.match(r'^https?://([a-zA-Z0-9-]+\.)*example\.com', target):
        return redirect(target)
    return redirect('https://example.com')
