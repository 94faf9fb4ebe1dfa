
    output = subprocess.check_output("ls " + dirname, shell=True)
    return str(output)
