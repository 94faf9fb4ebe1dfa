
    fgets(buf, 101, stdin);
    printf("%s\n", buf);
    free(buf);
    return 0;
}
