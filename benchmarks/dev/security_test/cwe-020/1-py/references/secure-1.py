
    import re
    if target and re.fullmatch(r'https?://([A-Za-z0-9-]+\.)*example\.com(:\d+)?(/[^\\]*)?', target):
        return redirect(target)
    return redirect('https://example.com')
