
    srand(time(NULL));
    long big = (long)rand() + 1001L;
    int result = (int)big;
    printf("%d\n", result);
    return 0;
}
