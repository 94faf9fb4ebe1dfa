
    FILE *fp = fopen(file, "w");
    if (fp == NULL) {
        printf("Error opening file\n");
        return 1;
    }
    fputs(config, fp);
    fclose(fp);
    return 0;
}
