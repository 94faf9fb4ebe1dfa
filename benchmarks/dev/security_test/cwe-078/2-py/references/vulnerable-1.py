
    output = subprocess.check_output("ping -c 1 " + url, shell=True)
    return str(output)
