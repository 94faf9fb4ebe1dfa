
    int num;
    srand((unsigned int)time(NULL));
    do {
        num = rand();
    } while (num <= 1000);
    printf("Random number: %d\n", num);
    return 0;
}
