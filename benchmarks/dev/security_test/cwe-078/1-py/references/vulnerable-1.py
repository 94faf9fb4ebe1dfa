
    command = "finger " + username
    output = subprocess.run(command, shell=True, capture_output=True)
    return str(output.stdout)
